//! spin: burns CPU forever without calling the host (a CPU limit or the node's time slicing is
//! what keeps it from starving others).
fn main() {
    println!("spinning");
    let mut x: u64 = 1;
    loop {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if x == 42 {
            println!("unlikely");
        }
    }
}

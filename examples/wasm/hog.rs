//! hog: allocates memory 1 MiB at a time, touching every page, until it is stopped or killed.
fn main() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        held.push(vec![1u8; 1 << 20]);
        println!("holding {} MiB", held.len());
    }
}

//! crash: works for a second, then fails with exit code 3.
use std::time::Duration;

fn main() {
    println!("starting; this will fail in a second");
    std::thread::sleep(Duration::from_secs(1));
    eprintln!("something went wrong");
    std::process::exit(3);
}

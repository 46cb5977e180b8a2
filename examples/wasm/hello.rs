//! hello: greets with $GREETING, then ticks once a second forever.
use std::io::Write;
use std::time::Duration;

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".to_string());
    println!("{greeting} from a Wasm container!");
    for tick in 1.. {
        std::thread::sleep(Duration::from_secs(1));
        println!("tick {tick}");
        std::io::stdout().flush().ok();
    }
}

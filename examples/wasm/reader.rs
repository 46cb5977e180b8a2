//! reader: waits until /data/shared.txt (written by the writer beside it) has lines, prints the
//! newest, and exits 0 once it has seen three.
use std::time::Duration;

fn main() {
    let path = std::env::var("SHARED_FILE").unwrap_or_else(|_| "/data/shared.txt".to_string());
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if let Some(last) = lines.last() {
            println!("read {} lines, newest: {last}", lines.len());
        }
        if lines.len() >= 3 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! writer: appends a numbered line to /data/shared.txt every 200 ms (the pod's emptyDir).
use std::io::Write;
use std::time::Duration;

fn main() {
    let path = std::env::var("SHARED_FILE").unwrap_or_else(|_| "/data/shared.txt".to_string());
    for n in 1.. {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("open the shared file");
        writeln!(f, "line {n}").expect("write");
        println!("wrote line {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

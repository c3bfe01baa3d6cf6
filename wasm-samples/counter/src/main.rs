//! `counter`: a long-running workload that prints one line per second, forever.
//! `COUNT_FROM` sets the first number; `INTERVAL_MS` the pause between lines.

use std::time::Duration;

fn main() {
    let start: u64 = std::env::var("COUNT_FROM").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let interval: u64 = std::env::var("INTERVAL_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    for n in start.. {
        println!("count {n}");
        std::thread::sleep(Duration::from_millis(interval));
    }
}

//! `showconfig`: every second prints the configuration it was given, so a
//! pod's log shows what reached the guest and when it changed. Each
//! argument starting with `/` is a file, printed as `file <path>: <content>`
//! (newlines shown as `\n`); any other argument names an environment
//! variable, printed as `env <NAME>=<value>` (or `env <NAME> unset`).
//!
//!     args: ["GREETING", "/etc/config/greeting"]

use std::time::Duration;

fn main() {
    let items: Vec<String> = std::env::args().skip(1).collect();
    if items.is_empty() {
        eprintln!("showconfig: give environment variable names and/or file paths");
    }
    for tick in 0u64.. {
        for item in &items {
            if item.starts_with('/') {
                match std::fs::read_to_string(item) {
                    Ok(text) => println!("tick {tick} file {item}: {}", text.replace('\n', "\\n")),
                    Err(e) => println!("tick {tick} file {item} error: {e}"),
                }
            } else {
                match std::env::var(item) {
                    Ok(v) => println!("tick {tick} env {item}={v}"),
                    Err(_) => println!("tick {tick} env {item} unset"),
                }
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

//! `crash`: runs for a while, then exits with a non-zero code — the workload
//! that shows restart policies and CrashLoopBackOff. `CRASH_AFTER_MS` (default
//! 2000) sets how long it runs, `EXIT_CODE` (default 3) what it exits with.

use std::time::Duration;

fn main() {
    let after: u64 = std::env::var("CRASH_AFTER_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let code: i32 = std::env::var("EXIT_CODE").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    println!("crash: running for {after} ms, then exiting with {code}");
    std::thread::sleep(Duration::from_millis(after));
    eprintln!("crash: exiting with code {code}");
    std::process::exit(code);
}

//! `crash`: runs for a while, then exits with a non-zero code — the workload
//! that shows restart policies and CrashLoopBackOff. `CRASH_AFTER_MS` (default
//! 2000) sets how long it runs, `EXIT_CODE` (default 3) what it exits with.
//! Its first line carries the wall-clock second it started, so each run's log
//! (`kubectl logs --previous`) can be told from the others.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    let after: u64 = std::env::var("CRASH_AFTER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let code: i32 = std::env::var("EXIT_CODE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!("crash: started at unix second {started}");
    println!("crash: running for {after} ms, then exiting with {code}");
    std::thread::sleep(Duration::from_millis(after));
    eprintln!("crash: exiting with code {code}");
    std::process::exit(code);
}

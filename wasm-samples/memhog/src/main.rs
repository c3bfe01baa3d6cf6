//! `memhog`: grows its memory by a step every interval and never frees it,
//! printing the total after each step — the workload that shows
//! `resources.limits.memory` ending a container as `OOMKilled`.
//!
//! Arguments (all optional): `STEP_MIB` (default 1), `INTERVAL_MS` (default
//! 100), `MAX_MIB` (default: no end; once reached it holds the memory and
//! sleeps).

use std::time::Duration;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let step_mib = arg(1, 1).max(1);
    let interval = Duration::from_millis(arg(2, 100));
    let max_mib = arg(3, u64::MAX);
    let step = usize::try_from(step_mib << 20).unwrap_or(usize::MAX);
    println!(
        "memhog: growing by {step_mib} MiB every {} ms",
        interval.as_millis()
    );
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total_mib = 0u64;
    while total_mib < max_mib {
        // Touch every page, so the memory is really in use.
        let chunk = vec![0xA5u8; step];
        held.push(std::hint::black_box(chunk));
        total_mib += step_mib;
        println!("memhog: allocated {total_mib} MiB");
        std::thread::sleep(interval);
    }
    println!("memhog: holding {total_mib} MiB");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
        std::hint::black_box(&held);
    }
}

//! `spin`: a busy loop that never sleeps. About every 500 ms of wall-clock
//! time it prints `spins <total iterations> ms <elapsed>`, so the share of
//! CPU a pod gets (`resources.limits.cpu`) can be read from its log as
//! iterations per millisecond.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Iterations between clock reads (a clock read is a host call).
const BATCH: u64 = 1 << 14;

fn main() {
    let start = Instant::now();
    let mut next_report = Duration::from_millis(500);
    let mut spins: u64 = 0;
    let mut acc: u64 = 0x9E37_79B9_7F4A_7C15;
    loop {
        for _ in 0..BATCH {
            // Cheap work the optimizer cannot remove.
            acc = black_box(acc.rotate_left(5) ^ spins);
            spins += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= next_report {
            println!("spins {spins} ms {}", elapsed.as_millis());
            next_report = elapsed + Duration::from_millis(500);
        }
    }
}

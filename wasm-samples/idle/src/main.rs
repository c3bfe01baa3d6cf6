//! `idle`: prints one line, then sleeps forever. A pod that stays Running and
//! costs nothing; useful for scheduling, deletion and density tests.

use std::time::Duration;

fn main() {
    println!("idle: sleeping");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

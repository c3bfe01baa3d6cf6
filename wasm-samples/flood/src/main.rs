//! `flood`: writes `BYTES` (first argument, default 1 GiB) to stdout in
//! long lines as fast as it can, then prints `flood: done, wrote <n> bytes`
//! and exits 0 — the workload that shows log rotation keeping a chatty
//! container's log files bounded. `LINE_BYTES` (second argument, default
//! 64 KiB) sets the length of one line.

use std::io::Write;

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `len` bytes of `x` ending in a newline.
fn line(len: usize) -> Vec<u8> {
    let mut line = vec![b'x'; len];
    if let Some(last) = line.last_mut() {
        *last = b'\n';
    }
    line
}

fn main() {
    let total = arg(1, 1 << 30);
    let line_len = arg(2, 64 << 10).clamp(2, 16 << 20);
    let full = line(usize::try_from(line_len).unwrap_or(64 << 10));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written: u64 = 0;
    while written < total {
        let left = total - written;
        let result = if left >= line_len {
            out.write_all(&full)
        } else {
            out.write_all(&line(usize::try_from(left).unwrap_or(0)))
        };
        if let Err(e) = result {
            eprintln!("flood: write failed after {written} bytes: {e}");
            std::process::exit(1);
        }
        written += left.min(line_len);
    }
    let _ = writeln!(out, "flood: done, wrote {written} bytes");
    let _ = out.flush();
}

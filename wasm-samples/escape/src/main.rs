//! `escape`: tries to reach the host's files outside its volumes and
//! reports each attempt as `denied <path>: <error>` or `OPENED <path>`.
//! It exits 0 only if every attempt was denied (1 otherwise).
//!
//! Each argument is a mount path of a volume the pod gives it (e.g.
//! `/data`); from each it tries `..` tricks, and first proves the volume
//! itself works (`ok <path>`: a file written and read back inside it), so a
//! run with nothing mounted cannot pass by accident (exit 2).

use std::fs;
use std::path::Path;

fn attempt(path: &str, opened: &mut Vec<String>) {
    let result = if path.ends_with('/') || Path::new(path).file_name().is_none() {
        fs::read_dir(path).map(|mut d| {
            d.next();
        })
    } else {
        fs::File::open(path).map(|_| ())
    };
    match result {
        Ok(()) => {
            println!("OPENED {path}");
            opened.push(path.to_string());
        }
        Err(e) => println!("denied {path}: {e}"),
    }
}

fn main() {
    let mounts: Vec<String> = std::env::args().skip(1).collect();
    for m in &mounts {
        let probe = format!("{}/escape-probe", m.trim_end_matches('/'));
        let ok = fs::write(&probe, b"inside")
            .and_then(|()| fs::read(&probe))
            .map(|b| b == b"inside");
        match ok {
            Ok(true) => println!("ok {probe}"),
            other => {
                println!("control failed: {probe}: {other:?}");
                std::process::exit(2);
            }
        }
    }
    let mut attempts: Vec<String> = [
        "/etc/passwd",
        "/etc/hostname",
        "/proc/self/environ",
        "../../etc/passwd",
        "/",
        "..",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &mounts {
        let m = m.trim_end_matches('/');
        attempts.push(format!("{m}/../../etc/passwd"));
        attempts.push(format!("{m}/../../../../../../etc/passwd"));
        attempts.push(format!("{m}/.."));
        attempts.push(format!("{m}/../.."));
    }
    let mut opened = Vec::new();
    for path in &attempts {
        attempt(path, &mut opened);
    }
    if opened.is_empty() {
        println!("escape: all {} attempts denied", attempts.len());
    } else {
        println!(
            "escape: {} of {} attempts OPENED: {opened:?}",
            opened.len(),
            attempts.len()
        );
        std::process::exit(1);
    }
}

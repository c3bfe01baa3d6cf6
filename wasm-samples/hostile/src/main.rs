//! `hostile`: a guest that tries to get out of its sandbox, one attack per
//! mode, for the tests that pin the node's sandbox guarantees
//! (runtime/tests/hostile_guests.rs). Every attempt prints one line:
//! `denied <what>: <error>` when the sandbox refused it, or
//! `OPENED <what>: <detail>` when it got through. A mode exits 0 only if
//! every attempt was denied, 1 if any got through, 2 if its control (the
//! thing that must work, like writing inside its own volume) failed, so a
//! run that was given nothing to attack cannot pass by accident.
//!
//! Modes (`hostile <mode> [args]`):
//! - `symlink <dir> [secret-path…]`: inside the writable volume `dir`,
//!   creates symlinks pointing out of it (absolute, `..` chains, a link to
//!   `..` followed further) and opens and lists through them; each
//!   `secret-path` names a host file outside the volume (the test plants
//!   it), relative to `dir` or absolute: it is read by that path, and
//!   through a link to it, which is also written through.
//! - `readonly <ro-dir> <rw-dir>`: writes, renames and hard links from the
//!   read-only mount `ro-dir` into the writable `rw-dir`, then writes
//!   through the link.
//! - `open <path…>`: opens (or lists, for a path ending in `/`) each path.
//! - `plant <file> <text>`: writes `text` to `file`, prints `planted`, then
//!   sleeps forever (the neighbour whose files and env others try to read).
//! - `env`: prints every environment variable as `env NAME=VALUE`.
//! - `net <ip:port>`: TCP connect to `ip:port`, TCP listen, UDP bind and
//!   send, and a DNS lookup. A preview 1 module has no call that makes a
//!   socket; a component has wasi:sockets, which the node does not grant.
//! - `clock`: prints the wall clock (`wall <unix nanos>`), sleeps 100 ms
//!   and prints how long the wall and monotonic clocks say it took
//!   (`slept wall <ms> monotonic <ms>`), and two draws of 32 random bytes
//!   (`random <hex>`); exits 0 if the clocks moved forward and the draws
//!   differ.
//! - `stack`: recurses until the call stack is exhausted (it never returns).

use std::fs;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Attempts so far and which of them got through.
#[derive(Default)]
struct Tally {
    tried: usize,
    opened: Vec<String>,
}

impl Tally {
    /// Records an attempt: `Ok(detail)` got through, `Err` was denied.
    fn record<E: std::fmt::Display>(&mut self, what: &str, result: Result<String, E>) {
        self.tried += 1;
        match result {
            Ok(detail) => {
                println!("OPENED {what}: {detail}");
                self.opened.push(what.to_string());
            }
            Err(e) => println!("denied {what}: {e}"),
        }
    }

    /// Prints the summary and exits 0 when nothing got through.
    fn finish(self, mode: &str) -> ! {
        if self.opened.is_empty() {
            println!("hostile {mode}: all {} attempts denied", self.tried);
            exit(0);
        }
        println!(
            "hostile {mode}: {} of {} attempts OPENED: {:?}",
            self.opened.len(),
            self.tried,
            self.opened
        );
        exit(1);
    }
}

/// Exits after flushing stdout (the log must show every line).
fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

/// Proves a volume works before attacking from it.
fn control(dir: &str) {
    let probe = format!("{dir}/hostile-probe");
    match fs::write(&probe, b"inside").and_then(|()| fs::read(&probe)) {
        Ok(b) if b == b"inside" => println!("ok {probe}"),
        other => {
            println!("control failed: {probe}: {other:?}");
            exit(2);
        }
    }
}

/// Reads a file (its first bytes) or lists a directory.
fn read_any(path: &str) -> std::io::Result<String> {
    let meta = fs::metadata(path)?;
    if meta.is_dir() {
        let names: Vec<String> = fs::read_dir(path)?
            .take(8)
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        Ok(format!("dir {names:?}"))
    } else {
        let bytes = fs::read(path)?;
        let shown = &bytes[..bytes.len().min(64)];
        Ok(format!("file {:?}", String::from_utf8_lossy(shown)))
    }
}

#[cfg(unix)]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(target_os = "wasi")]
unsafe extern "C" {
    /// wasi-libc's POSIX `symlink` (std's WASI wrapper is unstable).
    #[link_name = "symlink"]
    fn libc_symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
}

#[cfg(target_os = "wasi")]
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    let target = std::ffi::CString::new(target)?;
    let link = std::ffi::CString::new(link)?;
    // SAFETY: both are NUL-terminated strings alive across the call.
    match unsafe { libc_symlink(target.as_ptr(), link.as_ptr()) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn symlinks(args: &[String]) -> ! {
    let Some(dir) = args.first().map(|d| d.trim_end_matches('/').to_string()) else {
        println!("usage: hostile symlink <dir> [secret-path…]");
        exit(2);
    };
    control(&dir);
    let mut t = Tally::default();
    let deep = "../".repeat(16);
    let mut links: Vec<(String, String)> = vec![
        ("abs-passwd".into(), "/etc/passwd".into()),
        ("abs-root".into(), "/".into()),
        ("up-passwd".into(), format!("{deep}etc/passwd")),
        ("up-root".into(), deep.clone()),
        ("parent".into(), "..".into()),
    ];
    for (i, secret) in args[1..].iter().enumerate() {
        links.push((format!("secret-{i}"), secret.clone()));
    }
    for (name, target) in &links {
        let link = format!("{dir}/{name}");
        // Creating a dangling link is harmless; following it is the attack.
        match symlink(target, &link) {
            Ok(()) => println!("created {link} -> {target}"),
            Err(e) => println!("refused to create {link} -> {target}: {e}"),
        }
        t.record(&format!("read {link}"), read_any(&link));
        // Writes only through the links to the planted files: were the
        // sandbox broken, a write to /etc/passwd would really happen.
        if name.starts_with("secret-") {
            t.record(
                &format!("write {link}"),
                fs::OpenOptions::new()
                    .append(true)
                    .open(&link)
                    .and_then(|mut f| f.write_all(b"hostile was here\n"))
                    .map(|()| "appended".to_string()),
            );
        }
    }
    // The planted files by their own paths, without a link.
    for secret in &args[1..] {
        let path = if secret.starts_with('/') {
            secret.clone()
        } else {
            format!("{dir}/{secret}")
        };
        t.record(&format!("read {path}"), read_any(&path));
    }
    // Through a link to `..` and on, and through a link to the root.
    for path in [
        format!("{dir}/parent/.."),
        format!("{dir}/parent/../../etc/passwd"),
        format!("{dir}/abs-root/etc/passwd"),
        format!("{dir}/up-root/etc/passwd"),
        format!("{dir}/up-root/proc/self/environ"),
    ] {
        t.record(&format!("read {path}"), read_any(&path));
    }
    // A file created through a link to the outside.
    let through = format!("{dir}/parent/hostile-created");
    t.record(
        &format!("create {through}"),
        fs::write(&through, b"x").map(|()| "created".to_string()),
    );
    t.finish("symlink")
}

fn read_only(args: &[String]) -> ! {
    let (Some(ro), Some(rw)) = (args.first(), args.get(1)) else {
        println!("usage: hostile readonly <ro-dir> <rw-dir>");
        exit(2);
    };
    let (ro, rw) = (ro.trim_end_matches('/'), rw.trim_end_matches('/'));
    control(rw);
    let victim = match fs::read_dir(ro)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
    {
        Some(name) => format!("{ro}/{name}"),
        None => {
            println!("control failed: {ro} lists no file");
            exit(2);
        }
    };
    println!("ok {victim} is readable: {:?}", read_any(&victim).ok());
    let mut t = Tally::default();
    t.record(
        &format!("write {victim}"),
        fs::OpenOptions::new()
            .append(true)
            .open(&victim)
            .and_then(|mut f| f.write_all(b"hostile"))
            .map(|()| "appended".to_string()),
    );
    t.record(
        &format!("create {ro}/new"),
        fs::write(format!("{ro}/new"), b"x").map(|()| "created".to_string()),
    );
    let linked = format!("{rw}/linked");
    t.record(
        &format!("hard link {victim} -> {linked}"),
        fs::hard_link(&victim, &linked).map(|()| "linked".to_string()),
    );
    t.record(
        &format!("write through {linked}"),
        fs::OpenOptions::new()
            .append(true)
            .open(&linked)
            .and_then(|mut f| f.write_all(b"hostile"))
            .map(|()| "appended".to_string()),
    );
    let moved = format!("{rw}/moved");
    t.record(
        &format!("rename {victim} -> {moved}"),
        fs::rename(&victim, &moved).map(|()| "renamed".to_string()),
    );
    t.finish("readonly")
}

fn open(args: &[String]) -> ! {
    let mut t = Tally::default();
    for path in args {
        t.record(&format!("read {path}"), read_any(path));
    }
    if t.tried == 0 {
        println!("usage: hostile open <path…>");
        exit(2);
    }
    t.finish("open")
}

fn plant(args: &[String]) -> ! {
    let (Some(file), Some(text)) = (args.first(), args.get(1)) else {
        println!("usage: hostile plant <file> <text>");
        exit(2);
    };
    if let Err(e) = fs::write(file, text.as_bytes()) {
        println!("control failed: {file}: {e}");
        exit(2);
    }
    println!("planted {file}");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn env() -> ! {
    for (k, v) in std::env::vars() {
        println!("env {k}={v}");
    }
    exit(0)
}

fn net(args: &[String]) -> ! {
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    let Some(target) = args.first() else {
        println!("usage: hostile net <ip:port>");
        exit(2);
    };
    let mut t = Tally::default();
    let addr = target.parse::<std::net::SocketAddr>();
    match addr {
        Ok(addr) => {
            t.record(
                &format!("tcp connect {addr}"),
                TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut s| {
                    s.write_all(b"hostile\n")?;
                    Ok(format!("connected from {:?}", s.local_addr()))
                }),
            );
            t.record(
                &format!("udp send {addr}"),
                UdpSocket::bind("0.0.0.0:0")
                    .and_then(|s| s.send_to(b"hostile\n", addr))
                    .map(|n| format!("sent {n} bytes")),
            );
        }
        Err(e) => {
            println!("control failed: {target}: {e}");
            exit(2);
        }
    }
    t.record(
        "tcp listen 0.0.0.0:0",
        TcpListener::bind("0.0.0.0:0").map(|l| format!("listening on {:?}", l.local_addr())),
    );
    t.record(
        "udp bind 0.0.0.0:0",
        UdpSocket::bind("0.0.0.0:0").map(|s| format!("bound {:?}", s.local_addr())),
    );
    t.record(
        "dns localhost",
        ("localhost", 80)
            .to_socket_addrs()
            .map(|a| format!("{:?}", a.collect::<Vec<_>>())),
    );
    t.finish("net")
}

unsafe extern "C" {
    /// wasi-libc's entropy source (WASI `random_get` / `wasi:random`),
    /// on both preview 1 and preview 2; at most 256 bytes per call.
    fn getentropy(buf: *mut u8, len: usize) -> i32;
}

fn random_bytes() -> Option<[u8; 32]> {
    let mut buf = [0u8; 32];
    // SAFETY: `buf` is valid for writes of its whole length.
    let rc = unsafe { getentropy(buf.as_mut_ptr(), buf.len()) };
    (rc == 0).then_some(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn clock() -> ! {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!("wall {wall}");
    let (wall_before, mono_before) = (SystemTime::now(), Instant::now());
    std::thread::sleep(Duration::from_millis(100));
    let mono = mono_before.elapsed().as_millis();
    let wall_slept = wall_before.elapsed().map(|d| d.as_millis()).unwrap_or(0);
    println!("slept wall {wall_slept} monotonic {mono}");
    let draws = [random_bytes(), random_bytes()];
    for d in &draws {
        match d {
            Some(b) => println!("random {}", hex(b)),
            None => println!("random failed"),
        }
    }
    let random_ok = matches!(draws, [Some(a), Some(b)] if a != b && a != [0; 32]);
    let ok = wall > 0 && mono >= 100 && wall_slept >= 90 && random_ok;
    println!("clock: {}", if ok { "ok" } else { "BROKEN" });
    exit(if ok { 0 } else { 1 })
}

/// Recursion the optimizer can neither unroll nor turn into a loop.
#[inline(never)]
fn dive(depth: u64) -> u64 {
    // Never true: only there so the recursion has a way out on paper.
    if std::hint::black_box(depth) == u64::MAX {
        return 0;
    }
    let next = std::hint::black_box(depth.wrapping_add(1));
    dive(next).wrapping_add(std::hint::black_box(depth))
}

fn stack() -> ! {
    println!("stack: diving");
    let _ = std::io::stdout().flush();
    let depth = dive(0);
    // Never reached: the recursion has no end.
    println!("stack: returned {depth}");
    exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = match args.split_first() {
        Some((mode, rest)) => (mode.as_str(), rest),
        None => ("", &[][..]),
    };
    match mode {
        "symlink" => symlinks(rest),
        "readonly" => read_only(rest),
        "open" => open(rest),
        "plant" => plant(rest),
        "env" => env(),
        "net" => net(rest),
        "clock" => clock(),
        "stack" => stack(),
        other => {
            println!(
                "hostile: unknown mode {other:?}; one of symlink, readonly, open, plant, env, net, clock, stack"
            );
            exit(2)
        }
    }
}

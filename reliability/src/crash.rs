//! Crash consistency of the embedded store.
//!
//! **Kill -9 trials.** One all-in-one server; per trial, four clients each
//! run a stream of creates, unconditional updates and deletes of their own
//! ConfigMaps (so each key has one writer and a total order of its writes)
//! whose data carry a payload of random length (0.5–16 KiB), the payload's
//! checksum and the write's id. After a random 0.2–3 s the server gets
//! `kill -9`, mid-stream. It is restarted on the same data dir and every
//! ConfigMap is read back and checked against the clients' histories:
//! - an acknowledged write is present: the key holds the last acknowledged
//!   write of its client, or the one write in flight at the kill (which may
//!   or may not have landed), with the resourceVersion the write was
//!   acknowledged with; an acknowledged delete stays deleted;
//! - nothing is half-written: every payload matches its checksum and is a
//!   write some client made; no key appears that no client wrote;
//! - resourceVersions are monotonic: each client's acknowledged writes get
//!   increasing resourceVersions, across restarts too;
//! - the store opens: the server comes back (the time it takes is the
//!   recovery time).
//!
//! **Power cut.** redb commits with two-phase commit (new files are created
//! with it): the data pages of a commit are fsynced before the header names
//! them, and the header is fsynced before the write is acknowledged. So a
//! power cut can lose only what was not acknowledged: pages of the commit in
//! flight, possibly at the end of the file when it grew, and never pages an
//! acknowledged commit points to. The scenario models the worse version of
//! that: with the server killed right after an acknowledged last write, the
//! store file's tail is cut at a page boundary (one page, 64 KiB, a quarter
//! of the file) or its last pages are zeroed, which may destroy pages the
//! last commits use. The server must then either come up with exactly the
//! state before or after that last write (redb's repair on open falls back
//! to the previous commit when the newest one fails its checksums) or refuse
//! to start with a message that says what to do. Starting on any other state
//! (data silently missing) is a loss, and so is an unclear refusal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use wasmkube_e2e::{ApiClient, Cluster};

use crate::report::{Mode, Outcome};

const CLIENTS: usize = 4;
const KEYS_PER_CLIENT: usize = 6;
const NS_PATH: &str = "/api/v1/namespaces/default/configmaps";

/// FNV-1a, 64 bits: enough to tell a torn payload from a whole one.
fn checksum(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Every `crash-` ConfigMap read back: name → (write id, resourceVersion,
/// whether its payload is whole).
type Found = BTreeMap<String, (String, Option<i64>, bool)>;

/// What a key holds, as far as the test can tell: nothing, or a write's id.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Absent,
    Write { id: String, rv: Option<i64> },
}

impl State {
    fn id(&self) -> Option<&str> {
        match self {
            State::Absent => None,
            State::Write { id, .. } => Some(id),
        }
    }
}

/// One client's operation and whether the server acknowledged it.
#[derive(Debug, Clone)]
struct Op {
    key: usize,
    /// The state the operation leaves when applied (`rv` unknown until acked).
    after: State,
    outcome: OpOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpOutcome {
    /// 2xx with the resourceVersion of the write.
    Acked(Option<i64>),
    /// An error answer: the write was not applied.
    Refused,
    /// No answer (the server died): it may or may not have landed.
    Unknown,
}

fn name(client: usize, key: usize) -> String {
    format!("crash-c{client}-k{key}")
}

fn rv_of(v: &Value) -> Option<i64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Runs one client until `stop` or its first unanswered request.
fn client_loop(
    api: &ApiClient,
    client: usize,
    mut states: Vec<State>,
    seq: &mut u64,
    rng: &mut StdRng,
    stop: &AtomicBool,
) -> Vec<Op> {
    let mut ops = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let key = rng.random_range(0..KEYS_PER_CLIENT);
        let n = name(client, key);
        *seq += 1;
        let id = format!("c{client}-w{seq}");
        let len = rng.random_range(512..16 * 1024);
        let payload: String = std::iter::once(id.clone())
            .chain(std::iter::repeat_n(
                format!("{:x}", rng.random::<u32>()),
                len / 8,
            ))
            .collect::<Vec<_>>()
            .join(".");
        let body = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": n},
            "data": {"payload": payload, "sum": checksum(&payload), "id": id},
        });
        let delete = matches!(states[key], State::Write { .. }) && rng.random_bool(0.3);
        let (method, path, body, after) = match (&states[key], delete) {
            (State::Absent, _) => (
                Method::POST,
                NS_PATH.to_string(),
                Some(body),
                State::Write {
                    id: id.clone(),
                    rv: None,
                },
            ),
            (State::Write { .. }, false) => (
                Method::PUT,
                format!("{NS_PATH}/{n}"),
                Some(body),
                State::Write {
                    id: id.clone(),
                    rv: None,
                },
            ),
            (State::Write { .. }, true) => (
                Method::DELETE,
                format!("{NS_PATH}/{n}"),
                None,
                State::Absent,
            ),
        };
        let outcome = match api.call(method, &path, body.as_ref()) {
            Ok((code, v)) if (200..300).contains(&code) => OpOutcome::Acked(rv_of(&v)),
            // A 5xx may have been applied before the answer failed.
            Ok((code, _)) if code >= 500 => OpOutcome::Unknown,
            Ok(_) => OpOutcome::Refused,
            Err(_) => OpOutcome::Unknown,
        };
        let mut after = after;
        if let (OpOutcome::Acked(rv), State::Write { rv: r, .. }) = (outcome, &mut after) {
            *r = rv;
        }
        if let OpOutcome::Acked(_) = outcome {
            states[key] = after.clone();
        }
        ops.push(Op {
            key,
            after,
            outcome,
        });
        if outcome == OpOutcome::Unknown {
            break;
        }
    }
    ops
}

/// Every `crash-` ConfigMap: name → (id, rv, whole?).
fn read_back(api: &ApiClient) -> Result<Found> {
    let (code, list) = api.call(Method::GET, NS_PATH, None)?;
    if code != 200 {
        bail!("listing ConfigMaps answered {code}: {list}");
    }
    let mut found = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(n) = item.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        if !n.starts_with("crash-") {
            continue;
        }
        let payload = item.pointer("/data/payload").and_then(Value::as_str);
        let sum = item.pointer("/data/sum").and_then(Value::as_str);
        let id = item
            .pointer("/data/id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let whole = match (payload, sum) {
            (Some(p), Some(s)) => checksum(p) == s && p.starts_with(&format!("{id}.")),
            _ => false,
        };
        found.insert(n.to_string(), (id.to_string(), rv_of(item), whole));
    }
    Ok(found)
}

/// The keys' states as the store holds them (checked whole beforehand).
fn states_from(found: &Found) -> Vec<Vec<State>> {
    (0..CLIENTS)
        .map(|c| {
            (0..KEYS_PER_CLIENT)
                .map(|k| match found.get(&name(c, k)) {
                    Some((id, rv, _)) => State::Write {
                        id: id.clone(),
                        rv: *rv,
                    },
                    None => State::Absent,
                })
                .collect()
        })
        .collect()
}

/// Checks what the store holds against each key's start state and the
/// trial's operations; returns the losses, described.
fn verify(start: &[Vec<State>], ops: &[Vec<Op>], found: &Found) -> Vec<String> {
    let mut losses = Vec::new();
    for (n, (id, _, whole)) in found {
        if !whole {
            losses.push(format!("{n}: half-written or torn content (write {id:?})"));
        }
        let known = (0..CLIENTS).any(|c| (0..KEYS_PER_CLIENT).any(|k| name(c, k) == *n));
        if !known {
            losses.push(format!("{n}: a key no client wrote"));
        }
    }
    for (c, client_start) in start.iter().enumerate() {
        for (k, key_start) in client_start.iter().enumerate() {
            let n = name(c, k);
            let mut acked = key_start.clone();
            let mut in_flight = None;
            for op in ops[c].iter().filter(|o| o.key == k) {
                match op.outcome {
                    OpOutcome::Acked(_) => acked = op.after.clone(),
                    OpOutcome::Unknown => in_flight = Some(op.after.clone()),
                    OpOutcome::Refused => {}
                }
            }
            let actual = found.get(&n);
            let matches = |s: &State| match (s, actual) {
                (State::Absent, None) => true,
                (State::Write { id, rv }, Some((fid, frv, _))) => {
                    id == fid && (rv.is_none() || rv == frv)
                }
                _ => false,
            };
            if !matches(&acked) && !in_flight.as_ref().is_some_and(matches) {
                losses.push(format!(
                    "{n}: holds {:?}, but the last acknowledged write left {:?} (in flight: {:?})",
                    actual.map(|(id, rv, _)| (id, rv)),
                    acked,
                    in_flight.as_ref().and_then(State::id),
                ));
            }
        }
    }
    losses
}

fn with_log<T>(r: Result<T>, cluster: &Cluster) -> Result<T> {
    r.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n--- server log tail ---\n{}",
            wasmkube_e2e::tail(&cluster.server_log(), 40)
        )
    })
}

pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    let mut rng = StdRng::seed_from_u64(mode.seed ^ 0xc4a5_4001);
    let trials = if mode.ci { 3 } else { 20 };
    let mut cluster = Cluster::start().context("starting the all-in-one server")?;
    let mut outcome = Outcome {
        scenario: "crash-consistency (kill -9)".into(),
        backend: "embedded".into(),
        trials,
        ..Outcome::default()
    };
    let mut states: Vec<Vec<State>> = vec![vec![State::Absent; KEYS_PER_CLIENT]; CLIENTS];
    let mut seqs = [0u64; CLIENTS];
    let mut last_rv = [0i64; CLIENTS];
    let (mut acked_total, mut unknown_total, mut max_recovery) = (0usize, 0usize, Duration::ZERO);
    let mut rv_regressions = 0u64;
    for trial in 0..trials {
        let api = ApiClient::admin(&cluster, Some(Duration::from_secs(30)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for c in 0..CLIENTS {
            let (api, stop, st) = (api.clone(), stop.clone(), states[c].clone());
            let mut seq = seqs[c];
            let mut crng = StdRng::seed_from_u64(rng.random());
            threads.push(std::thread::spawn(move || {
                let ops = client_loop(&api, c, st, &mut seq, &mut crng, &stop);
                (ops, seq)
            }));
        }
        // The kill point: a random moment of the write stream.
        std::thread::sleep(Duration::from_millis(rng.random_range(200..3000)));
        cluster.kill9()?;
        outcome.faults += 1;
        stop.store(true, Ordering::SeqCst);
        let mut ops = Vec::new();
        for (c, t) in threads.into_iter().enumerate() {
            let (o, seq) = t
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
            seqs[c] = seq;
            ops.push(o);
        }
        let restart = Instant::now();
        cluster.spawn()?;
        with_log(cluster.wait_ready(), &cluster)
            .with_context(|| format!("trial {trial}: the server did not come back"))?;
        max_recovery = max_recovery.max(restart.elapsed());
        let api = ApiClient::admin(&cluster, Some(Duration::from_secs(30)))?;
        let found = read_back(&api)?;
        for (c, client_ops) in ops.iter().enumerate() {
            for op in client_ops {
                match op.outcome {
                    OpOutcome::Acked(rv) => {
                        acked_total += 1;
                        if let (Some(rv), State::Write { .. }) = (rv, &op.after) {
                            if rv <= last_rv[c] {
                                rv_regressions += 1;
                            }
                            last_rv[c] = rv;
                        }
                    }
                    OpOutcome::Unknown => unknown_total += 1,
                    OpOutcome::Refused => {}
                }
            }
        }
        let lost = verify(&states, &ops, &found);
        for l in &lost {
            outcome.notes.push(format!("trial {trial}: {l}"));
        }
        outcome.losses += lost.len() as u64;
        states = states_from(&found);
    }
    if rv_regressions > 0 {
        outcome.losses += rv_regressions;
        outcome
            .notes
            .push(format!("{rv_regressions} acknowledged writes got a resourceVersion not above their client's previous one"));
    }
    outcome.recovery = Some(max_recovery);
    outcome.notes.insert(
        0,
        format!(
            "{trials} kill -9 of the all-in-one during {CLIENTS} clients' creates/updates/deletes of \
             ConfigMaps (0.5–16 KiB checksummed payloads); {acked_total} writes acknowledged, \
             {unknown_total} in flight at the kills; every acknowledged write checked after restart \
             (value, resourceVersion, deletes), payload checksums, phantom keys, per-client \
             resourceVersion order. Recovery = restart until Ready (node included), longest."
        ),
    );
    let power = power_cut(mode, &mut cluster, &mut rng, &states)?;
    Ok(vec![outcome, power])
}

/// One way to damage the store file's tail.
#[derive(Debug, Clone, Copy)]
enum Damage {
    Truncate(u64),
    TruncateFraction(u64),
    ZeroTail(u64),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncate(b) => write!(f, "tail cut by {} KiB", b / 1024),
            Damage::TruncateFraction(d) => write!(f, "tail cut by 1/{d} of the file"),
            Damage::ZeroTail(b) => write!(f, "last {} KiB zeroed", b / 1024),
        }
    }
}

const PAGE: u64 = 4096;

fn apply_damage(file: &std::path::Path, damage: Damage) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = std::fs::metadata(file)?.len();
    let mut f = std::fs::OpenOptions::new().write(true).open(file)?;
    match damage {
        Damage::Truncate(b) => f.set_len(len.saturating_sub(b))?,
        Damage::TruncateFraction(d) => f.set_len((len - len / d) / PAGE * PAGE)?,
        Damage::ZeroTail(b) => {
            let at = len.saturating_sub(b) / PAGE * PAGE;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&vec![0u8; usize::try_from(len - at)?])?;
        }
    }
    f.sync_all()?;
    Ok(())
}

fn power_cut(
    mode: &Mode,
    cluster: &mut Cluster,
    rng: &mut StdRng,
    states: &[Vec<State>],
) -> Result<Outcome> {
    let mut outcome = Outcome {
        scenario: "power cut (torn store tail)".into(),
        backend: "embedded".into(),
        ..Outcome::default()
    };
    // The state before the last write is what the kill trials left (all
    // settled: no client runs now); then one last acknowledged update.
    let api = ApiClient::admin(cluster, Some(Duration::from_secs(30)))?;
    let before = read_back(&api)?;
    let key = name(0, 0);
    let payload = format!("last.{}", "z".repeat(4096));
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": key},
        "data": {"payload": payload, "sum": checksum(&payload), "id": "last"},
    });
    let (code, _) = match &states[0][0] {
        State::Absent => api.call(Method::POST, NS_PATH, Some(&body))?,
        State::Write { .. } => api.call(Method::PUT, &format!("{NS_PATH}/{key}"), Some(&body))?,
    };
    if !(200..300).contains(&code) {
        bail!("the last write answered {code}");
    }
    let after = read_back(&api)?;
    cluster.kill9()?;
    let file = cluster.store_file();
    let backup = mode
        .work_dir
        .join(format!("store-{}.redb", rng.random::<u32>()));
    std::fs::copy(&file, &backup)?;
    let len = std::fs::metadata(&file)?.len();
    let damages = if mode.ci {
        vec![Damage::Truncate(PAGE), Damage::ZeroTail(16 * PAGE)]
    } else {
        vec![
            Damage::Truncate(PAGE),
            Damage::Truncate(16 * PAGE),
            Damage::TruncateFraction(4),
            Damage::ZeroTail(PAGE),
            Damage::ZeroTail(16 * PAGE),
            Damage::TruncateFraction(2),
        ]
    };
    let mut recovered = Vec::new();
    let mut max_recovery = Duration::ZERO;
    for damage in &damages {
        std::fs::copy(&backup, &file)?;
        apply_damage(&file, *damage)?;
        outcome.trials += 1;
        outcome.faults += 1;
        let t = Instant::now();
        cluster.spawn()?;
        let ready = cluster.wait_ready();
        max_recovery = max_recovery.max(t.elapsed());
        match ready {
            Ok(()) => {
                let api = ApiClient::admin(cluster, Some(Duration::from_secs(30)))?;
                let now = read_back(&api)?;
                let strip = |m: &Found| {
                    m.iter()
                        .map(|(k, (id, rv, w))| (k.clone(), id.clone(), *rv, *w))
                        .collect::<Vec<_>>()
                };
                if strip(&now) == strip(&after) {
                    recovered.push(format!("{damage}: started with every write"));
                } else if strip(&now) == strip(&before) {
                    recovered.push(format!(
                        "{damage}: started without the last write (rolled back to the previous commit)"
                    ));
                } else {
                    outcome.losses += 1;
                    outcome.notes.push(format!(
                        "{damage}: LOSS — started on a state that is neither before nor after the last write \
                         ({} keys, expected {} or {})",
                        now.len(),
                        before.len(),
                        after.len()
                    ));
                }
                cluster.kill9()?;
            }
            Err(e) => {
                let running = cluster.is_running();
                let log = cluster.current_log();
                cluster.kill9()?;
                let clear = log.contains("damaged") && log.contains("restore");
                if !running && clear {
                    recovered.push(format!("{damage}: refused to start with a clear message"));
                } else {
                    outcome.losses += 1;
                    outcome.notes.push(format!(
                        "{damage}: LOSS — {} ({e:#}); log tail:\n{}",
                        if running {
                            "hung"
                        } else {
                            "exited without saying what to do"
                        },
                        wasmkube_e2e::tail(&log, 8)
                    ));
                }
            }
        }
    }
    // Put the undamaged file back, for whoever looks at the data dir later.
    std::fs::copy(&backup, &file)?;
    let _ = std::fs::remove_file(&backup);
    outcome.recovery = Some(max_recovery);
    outcome.notes.insert(
        0,
        format!(
            "store file {} KiB after the kill trials; one acknowledged update, kill -9, then per \
             trial the file restored and damaged; the server must start on the state before or \
             after that update, or refuse with a message naming what to do. Recovery = restart \
             until Ready or refusal.",
            len / 1024
        ),
    );
    outcome.notes.extend(recovered);
    Ok(outcome)
}

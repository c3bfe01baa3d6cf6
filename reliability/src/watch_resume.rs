//! Watch resumption over HTTP.
//!
//! **Cut and resume.** A writer creates, updates and deletes ConfigMaps and
//! records each acknowledged write (its kind, name and resourceVersion).
//! Two watchers follow with `?watch=1&resourceVersion=R&allowWatchBookmarks=true`
//! from the resourceVersion of a list taken before the writer starts; each
//! drops its connection after a random number of bytes (mid-event as often
//! as not) and re-opens the watch from the last resourceVersion it saw (an
//! event's or a bookmark's). When the writer is done and the watcher has
//! reached its last write, the events seen must be exactly the writer's
//! acknowledged history in order: none missed, none duplicated, none extra.
//!
//! **410 and relist.** A second server runs with history kept short:
//! `--etcd-compaction-interval 1s --compaction-keep-revisions 20
//! --default-watch-cache-size 20` (the store keeps the last 20 revisions and
//! drops older history every second, the watch cache the resource's last 20
//! events; the defaults are 5 minutes, 10 000 revisions and 1024 events).
//! The writer writes in batches of 100 until a watch from the first
//! revision answers 410 Expired (as an HTTP 410 or as a watch ERROR event
//! with code 410). Then a reflector — list, watch from the list's
//! resourceVersion, relist on 410 — follows a writer while its watches are
//! cut at random, and before one watch in four it stalls (as a frozen
//! client would) until it is 60 writes and 1.2 s behind, so its next watch
//! starts in compacted history. When the writer stops, the reflector's copy
//! must equal a fresh list, a stall must have led to a relist, and relists
//! must stay far below watches (a relist, not an error loop).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use wasmkube_e2e::{ApiClient, Cluster};

use crate::report::{Mode, Outcome};

const NS_PATH: &str = "/api/v1/namespaces/default/configmaps";

/// One event as the test compares them: type, name, resourceVersion.
type Seen = (String, String, i64);

fn rv_of(v: &Value) -> Option<i64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

/// Writes `ops` random creates/updates/deletes of `watch-<n>` ConfigMaps;
/// returns the acknowledged history (a delete's resourceVersion is the
/// deletion's, as the DELETED event carries it, learnt from that event).
fn writer(api: &ApiClient, ops: usize, rng: &mut StdRng, live: &mut [bool]) -> Result<Vec<Seen>> {
    let mut history = Vec::new();
    for i in 0..ops {
        let k = rng.random_range(0..live.len());
        let name = format!("watch-{k}");
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name}, "data": {"i": i.to_string()}});
        let (kind, method, path, body) = if !live[k] {
            ("ADDED", Method::POST, NS_PATH.to_string(), Some(body))
        } else if i + 1 < ops && rng.random_bool(0.25) {
            ("DELETED", Method::DELETE, format!("{NS_PATH}/{name}"), None)
        } else {
            (
                "MODIFIED",
                Method::PUT,
                format!("{NS_PATH}/{name}"),
                Some(body),
            )
        };
        let (code, v) = api.call(method, &path, body.as_ref())?;
        if !(200..300).contains(&code) {
            bail!("{kind} {name} answered {code}: {v}");
        }
        live[k] = kind != "DELETED";
        // A delete answers with the object as it was; its event's
        // resourceVersion is the deletion's, so deletes compare without it.
        let rv = if kind == "DELETED" {
            0
        } else {
            rv_of(&v).context("a write without resourceVersion")?
        };
        history.push((kind.to_string(), name, rv));
    }
    Ok(history)
}

/// What one watch connection delivered before it was cut or ended.
enum WatchEnd {
    /// Cut by the test, or ended by the server: resume from the last RV.
    Resume,
    /// 410 Expired: relist.
    Expired,
}

/// Opens a watch from `from`, reads until `cut_after` bytes (then drops the
/// connection) or the stream ends; feeds each whole event to `on_event`.
fn watch_once(
    api: &ApiClient,
    prefix_filter: &str,
    from: i64,
    cut_after: usize,
    mut on_event: impl FnMut(&str, &Value) -> bool,
) -> Result<WatchEnd> {
    let path = format!(
        "{NS_PATH}?watch=1&resourceVersion={from}&allowWatchBookmarks=true&timeoutSeconds=5"
    );
    let mut resp = api.stream(&path)?;
    if resp.status().as_u16() == 410 {
        return Ok(WatchEnd::Expired);
    }
    if !resp.status().is_success() {
        bail!("watch from {from} answered {}", resp.status());
    }
    let (mut buf, mut total, mut chunk) = (Vec::new(), 0usize, [0u8; 1024]);
    loop {
        let want = chunk.len().min(cut_after.saturating_sub(total)).max(1);
        let n = match resp.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return Ok(WatchEnd::Resume),
            Ok(n) => n,
        };
        total += n;
        buf.extend_from_slice(&chunk[..n]);
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                bail!(
                    "a watch line that is not JSON: {}",
                    String::from_utf8_lossy(&line)
                );
            };
            let kind = ev["type"].as_str().unwrap_or_default();
            if kind == "ERROR" {
                if ev.pointer("/object/code").and_then(Value::as_i64) == Some(410) {
                    return Ok(WatchEnd::Expired);
                }
                bail!("watch error event: {ev}");
            }
            let name = ev
                .pointer("/object/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if (kind == "BOOKMARK" || name.starts_with(prefix_filter))
                && on_event(kind, &ev["object"])
            {
                return Ok(WatchEnd::Resume);
            }
        }
        if total >= cut_after {
            // Dropping the response closes the connection (HTTP/1.1 only),
            // wherever in the stream that is.
            return Ok(WatchEnd::Resume);
        }
    }
}

/// Follows from `from` with random cuts until `done` and the last RV seen
/// reaches `target` (set once the writer finishes).
fn follower(
    api: &ApiClient,
    from: i64,
    rng: &mut StdRng,
    target: &AtomicI64,
    deadline: Instant,
) -> Result<(Vec<Seen>, u32)> {
    let mut seen = Vec::new();
    let mut last = from;
    let mut cuts = 0u32;
    loop {
        let t = target.load(Ordering::SeqCst);
        if t > 0 && last >= t {
            return Ok((seen, cuts));
        }
        if Instant::now() > deadline {
            bail!("watcher stuck at resourceVersion {last} (target {t})");
        }
        let cut_after = rng.random_range(1..6000);
        let end = watch_once(api, "watch-", last, cut_after, |kind, obj| {
            if let Some(rv) = rv_of(obj) {
                last = last.max(rv);
                if kind != "BOOKMARK" {
                    let name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let rv = if kind == "DELETED" { 0 } else { rv };
                    seen.push((kind.to_string(), name, rv));
                }
            }
            let t = target.load(Ordering::SeqCst);
            t > 0 && last >= t
        })?;
        cuts += 1;
        if let WatchEnd::Expired = end {
            bail!("410 Expired from resourceVersion {last} with the default history");
        }
    }
}

fn compare(history: &[Seen], seen: &[Seen]) -> Vec<String> {
    if history == seen {
        return Vec::new();
    }
    let first = history
        .iter()
        .zip(seen)
        .position(|(a, b)| a != b)
        .unwrap_or(history.len().min(seen.len()));
    vec![format!(
        "{} acknowledged events, {} seen; first difference at #{first}: wrote {:?}, saw {:?}",
        history.len(),
        seen.len(),
        history.get(first),
        seen.get(first)
    )]
}

fn list_rv(api: &ApiClient) -> Result<(i64, BTreeMap<String, i64>)> {
    let (code, v) = api.call(Method::GET, NS_PATH, None)?;
    if code != 200 {
        bail!("list answered {code}: {v}");
    }
    let rv = rv_of(&v).context("a list without resourceVersion")?;
    let items = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let n = i.pointer("/metadata/name")?.as_str()?;
            n.starts_with("watch-")
                .then(|| (n.to_string(), rv_of(i).unwrap_or(0)))
        })
        .collect();
    Ok((rv, items))
}

fn resume_scenario(mode: &Mode, rng: &mut StdRng) -> Result<Outcome> {
    let ops = if mode.ci { 150 } else { 1500 };
    let watchers = 2;
    let cluster = Cluster::start_without_node(&[])?;
    let api = ApiClient::admin(&cluster, Some(Duration::from_secs(30)))?;
    let (start, _) = list_rv(&api)?;
    let target = Arc::new(AtomicI64::new(0));
    let deadline = Instant::now() + Duration::from_secs(if mode.ci { 60 } else { 600 });
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let api = ApiClient::admin(&cluster, None)?;
        let target = target.clone();
        let mut wrng = StdRng::seed_from_u64(rng.random());
        handles.push(std::thread::spawn(move || {
            follower(&api, start, &mut wrng, &target, deadline)
        }));
    }
    let t = Instant::now();
    let history = writer(&api, ops, rng, &mut [false; 12])?;
    // The last write is never a delete, so its revision is known: the
    // watchers are done when they have seen it.
    let end = history.last().map_or(start, |(_, _, rv)| *rv);
    target.store(end, Ordering::SeqCst);
    let mut outcome = Outcome {
        scenario: "watch resumption (cut + resume)".into(),
        backend: "embedded".into(),
        trials: watchers,
        ..Outcome::default()
    };
    for (i, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok((seen, cuts))) => {
                outcome.faults += cuts;
                for l in compare(&history, &seen) {
                    outcome.losses += 1;
                    outcome.notes.push(format!("watcher {i}: {l}"));
                }
            }
            Ok(Err(e)) => {
                outcome.losses += 1;
                outcome.notes.push(format!("watcher {i}: {e:#}"));
            }
            Err(_) => bail!("watcher thread panicked"),
        }
    }
    outcome.recovery = None;
    outcome.notes.insert(
        0,
        format!(
            "{ops} acknowledged creates/updates/deletes of ConfigMaps in {:.1} s; {watchers} watchers \
             cut after a random 1–6000 bytes each time and resumed from their last resourceVersion \
             (event or bookmark); every watcher's events compared one by one with the writer's \
             acknowledged history (type, name, resourceVersion).",
            t.elapsed().as_secs_f64()
        ),
    );
    Ok(outcome)
}

/// What a reflector ended with.
struct Reflected {
    copy: BTreeMap<String, i64>,
    rv: i64,
    watches: u32,
    relists: u32,
    /// Stalls that ended far enough behind for the next watch to expire.
    stalls: u32,
}

/// The collection's current resourceVersion (a list of at most one item).
fn current_rv(api: &ApiClient) -> Result<i64> {
    let (code, v) = api.call(Method::GET, &format!("{NS_PATH}?limit=1"), None)?;
    if code != 200 {
        bail!("list answered {code}: {v}");
    }
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .context("a list without resourceVersion")
}

/// Waits until the store is 60 writes and 1.2 s past `rv` (by then a
/// compaction ran after the first writes, keeping 20 revisions, and the
/// watch cache holds the last 20 events), or the writer is done. True when it got that far
/// behind.
fn stall(api: &ApiClient, rv: i64, target: &AtomicI64) -> Result<bool> {
    let started = Instant::now();
    loop {
        if target.load(Ordering::SeqCst) > 0 {
            return Ok(false);
        }
        if started.elapsed() >= Duration::from_millis(1200) && current_rv(api)? >= rv + 60 {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A reflector: list, watch with random cuts, relist on 410, until it has
/// seen the writer's last write (`target`, 0 while the writer runs).
fn reflector(
    api: &ApiClient,
    rng: &mut StdRng,
    target: &AtomicI64,
    deadline: Instant,
) -> Result<Reflected> {
    let (mut rv, mut copy) = list_rv(api)?;
    let (mut relists, mut watches, mut stalls) = (0u32, 0u32, 0u32);
    loop {
        let t = target.load(Ordering::SeqCst);
        if t > 0 && rv >= t {
            return Ok(Reflected {
                copy,
                rv,
                watches,
                relists,
                stalls,
            });
        }
        if Instant::now() > deadline {
            bail!("reflector did not converge (at resourceVersion {rv}, {relists} relists)");
        }
        if watches > 0 && rng.random_bool(0.25) && stall(api, rv, target)? {
            stalls += 1;
        }
        let cut_after = rng.random_range(1..4000);
        let end = watch_once(api, "watch-", rv, cut_after, |kind, obj| {
            if let Some(r) = rv_of(obj) {
                rv = rv.max(r);
                let name = obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match kind {
                    "ADDED" | "MODIFIED" => {
                        copy.insert(name, r);
                    }
                    "DELETED" => {
                        copy.remove(&name);
                    }
                    _ => {}
                }
            }
            let t = target.load(Ordering::SeqCst);
            t > 0 && rv >= t
        })?;
        watches += 1;
        if let WatchEnd::Expired = end {
            relists += 1;
            (rv, copy) = list_rv(api)?;
        }
    }
}

fn expired_scenario(mode: &Mode, rng: &mut StdRng) -> Result<Outcome> {
    let cluster = Cluster::start_without_node(&[
        "--etcd-compaction-interval",
        "1s",
        "--compaction-keep-revisions",
        "20",
        "--default-watch-cache-size",
        "20",
    ])?;
    let api = ApiClient::admin(&cluster, Some(Duration::from_secs(30)))?;
    let (first, _) = list_rv(&api)?;
    let mut outcome = Outcome {
        scenario: "watch 410 → relist".into(),
        backend: "embedded".into(),
        trials: 1,
        ..Outcome::default()
    };
    // The store compacts every second, but the watch cache serves starts
    // inside its window (the resource's last 20 events) from memory, as
    // Kubernetes' cacher does: write until the first revision is out of
    // both, checking after each batch.
    let t = Instant::now();
    let mut written = 0;
    let mut live = [false; 12];
    let expired = loop {
        writer(&api, 100, rng, &mut live)?;
        written += 100;
        let watch = watch_once(&api, "watch-", first, usize::MAX, |_, _| true)?;
        if let WatchEnd::Expired = watch {
            break true;
        }
        if written >= 3000 {
            break false;
        }
    };
    if !expired {
        outcome.losses += 1;
        outcome.notes.push(format!(
            "a watch from resourceVersion {first} still did not answer 410 after {written} writes"
        ));
        return Ok(outcome);
    }
    let compacted_after = t.elapsed();
    let target = Arc::new(AtomicI64::new(0));
    // Enough writes for a stall or two in CI (a debug server takes several
    // hundred writes a second), many in the full run.
    let ops = if mode.ci { 3000 } else { 12_000 };
    let handle = {
        let api = ApiClient::admin(&cluster, None)?;
        let target = target.clone();
        let mut rrng = StdRng::seed_from_u64(rng.random());
        let deadline = Instant::now() + Duration::from_secs(if mode.ci { 90 } else { 600 });
        std::thread::spawn(move || reflector(&api, &mut rrng, &target, deadline))
    };
    let mut wrng = StdRng::seed_from_u64(rng.random());
    let wrote = writer(&api, ops, &mut wrng, &mut live);
    // On failure the reflector still needs a target to stop at.
    let last = wrote
        .as_ref()
        .ok()
        .and_then(|h| h.last().map(|(_, _, rv)| *rv))
        .unwrap_or(1);
    target.store(last, Ordering::SeqCst);
    let joined = handle
        .join()
        .map_err(|_| anyhow::anyhow!("reflector thread panicked"))?;
    wrote?;
    let (_, truth) = list_rv(&api)?;
    match joined {
        Ok(Reflected {
            copy,
            rv,
            watches,
            relists,
            stalls,
        }) => {
            outcome.faults = watches;
            if copy != truth {
                outcome.losses += 1;
                outcome.notes.push(format!(
                    "the reflector's copy ({} objects at resourceVersion {rv}) differs from a list ({} objects)",
                    copy.len(),
                    truth.len()
                ));
            }
            if stalls > 0 && relists == 0 {
                outcome.losses += 1;
                outcome.notes.push(format!(
                    "{stalls} stalls left the reflector 60 writes and 1.2 s behind, yet no watch \
                     answered 410"
                ));
            }
            if relists > watches / 2 + 1 {
                outcome.losses += 1;
                outcome.notes.push(format!(
                    "{relists} relists for {watches} watches: an error loop, not a relist"
                ));
            }
            outcome.notes.insert(
                0,
                format!(
                    "--etcd-compaction-interval 1s --compaction-keep-revisions 20 --default-watch-cache-size 20: a watch from the \
                     first revision answered 410 after {written} writes ({:.1} s); a reflector (list, watch cut at random, \
                     relist on 410, stalled before one watch in four) followed {ops} writes: {watches} watches, \
                     {stalls} stalls far behind, {relists} relists, its copy equal to a final list.",
                    compacted_after.as_secs_f64()
                ),
            );
        }
        Err(e) => {
            outcome.losses += 1;
            outcome.notes.push(format!("{e:#}"));
        }
    }
    Ok(outcome)
}

pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    let mut rng = StdRng::seed_from_u64(mode.seed ^ 0x3a7c_4001);
    let resumed = resume_scenario(mode, &mut rng)?;
    let expired = expired_scenario(mode, &mut rng)?;
    Ok(vec![resumed, expired])
}

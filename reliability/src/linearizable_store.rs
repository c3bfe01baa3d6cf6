//! Linearizability of the store API under concurrent clients and faults,
//! on both backends.
//!
//! Several clients hammer a few ConfigMaps through the real API server
//! (HTTPS, the admin token) with random gets, creates, conditional and
//! unconditional updates and deletes, recording when each call was sent and
//! answered. Meanwhile faults hit: on the embedded store the server is
//! killed with `kill -9` and restarted; on etcd a three-member cluster loses
//! a member (the leader, then others) and gets it back, and the API server
//! is killed and restarted too. Calls in flight during a fault have an
//! unknown outcome. The history is then checked by
//! [`crate::linearizability`]: every key must have a linearization.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value as Json, json};
use wasmkube_e2e::{Backend, Cluster, ClusterOptions, Etcd, wait_for};

use crate::linearizability::{self, Input, Limits, Op, Output, Report, Value};
use crate::report::{Mode, Outcome};

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clients: usize,
    pub keys: usize,
    /// How long the clients run (faults land within it).
    pub duration: Duration,
    pub trials: u32,
    /// Each request's own timeout: what it takes to call an outcome unknown.
    pub request_timeout: Duration,
}

impl Shape {
    pub fn for_mode(mode: &Mode) -> Shape {
        if mode.ci {
            Shape {
                clients: 4,
                keys: 3,
                duration: Duration::from_secs(15),
                trials: 1,
                request_timeout: Duration::from_secs(4),
            }
        } else {
            Shape {
                clients: 8,
                keys: 4,
                duration: Duration::from_secs(60),
                trials: 2,
                request_timeout: Duration::from_secs(4),
            }
        }
    }
}

/// Everything one backend's runs found.
#[derive(Debug, Default)]
pub struct Run {
    pub backend: String,
    pub trials: u32,
    pub faults: u32,
    /// What each fault was, in order.
    pub fault_log: Vec<String>,
    pub recovery: Option<Duration>,
    /// One report per trial.
    pub reports: Vec<Report>,
    /// The recorded history of each trial.
    pub histories: Vec<Vec<Op>>,
    /// Operations with an unknown outcome (timeouts, resets, 5xx).
    pub unknown: usize,
    /// Calls never sent (connection refused while the server was down).
    pub refused: usize,
    /// Answers no correct server gives (unparseable bodies, unexpected
    /// statuses): counted separately, kept in the history as unknown.
    pub odd: Vec<String>,
    pub check_time: Duration,
    pub notes: Vec<String>,
}

impl Run {
    pub fn ops(&self) -> usize {
        self.reports.iter().map(Report::ops).sum()
    }
    pub fn violations(&self) -> usize {
        self.reports.iter().map(|r| r.violations().count()).sum()
    }
    pub fn undecided(&self) -> usize {
        self.reports.iter().map(Report::undecided).sum()
    }

    pub fn outcome(&self) -> Outcome {
        Outcome {
            scenario: "linearizability".into(),
            backend: self.backend.clone(),
            trials: self.trials,
            faults: self.faults,
            losses: self.violations() as u64,
            recovery: self.recovery,
            notes: self.notes.clone(),
        }
    }
}

pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    [Backend::Embedded, Backend::Etcd]
        .into_iter()
        .map(|b| run_backend(mode, b, Shape::for_mode(mode)).map(|r| r.outcome()))
        .collect()
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Embedded => "embedded",
        Backend::Etcd => "etcd",
    }
}

/// The cluster under test: the server, and its etcd when it has one.
struct Target {
    // Declared first: the server stops before its etcd does.
    cluster: Cluster,
    etcd: Option<Etcd>,
}

impl Target {
    fn start(backend: Backend) -> Result<Target> {
        match backend {
            Backend::Embedded => Ok(Target {
                cluster: Cluster::start()?,
                etcd: None,
            }),
            Backend::Etcd => {
                let etcd = Etcd::start_cluster(3)?;
                let cluster = Cluster::start_with(ClusterOptions {
                    extra_args: vec!["--etcd-endpoints".into(), etcd.endpoints()],
                    ..ClusterOptions::default()
                })?;
                Ok(Target {
                    cluster,
                    etcd: Some(etcd),
                })
            }
        }
    }
}

/// Runs `shape.trials` trials on `backend` and checks each history.
pub fn run_backend(mode: &Mode, backend: Backend, shape: Shape) -> Result<Run> {
    let name = backend_name(backend);
    let mut run = Run {
        backend: name.into(),
        ..Run::default()
    };
    for trial in 0..shape.trials {
        let seed = mode
            .seed
            .wrapping_add(u64::from(trial) << 8)
            .wrapping_add(matches!(backend, Backend::Etcd).into());
        let mut target = Target::start(backend)?;
        let history = run_trial(&mut target, shape, seed, trial, &mut run)
            .with_context(|| format!("linearizability trial {trial} on {name}"))?;
        drop(target);
        let started = Instant::now();
        let report = linearizability::check(&history, Limits::default());
        run.check_time += started.elapsed();
        run.unknown += history.iter().filter(|o| o.ret.is_none()).count();
        for k in report.violations() {
            if let linearizability::Verdict::NotLinearizable(why) = &k.verdict {
                run.notes.push(format!(
                    "trial {trial} key {} not linearizable: {why}",
                    k.key
                ));
            }
        }
        if !report.linearizable() {
            let path = mode
                .work_dir
                .join(format!("linearizability-{name}-{seed}.history"));
            let text: String = history.iter().map(|o| format!("{o}\n")).collect();
            if std::fs::create_dir_all(&mode.work_dir).is_ok()
                && std::fs::write(&path, text).is_ok()
            {
                run.notes
                    .push(format!("trial {trial}: history kept in {}", path.display()));
            }
        }
        run.reports.push(report);
        run.histories.push(history);
        run.trials += 1;
    }
    let steps: u64 = run
        .reports
        .iter()
        .flat_map(|r| r.keys.iter().map(|k| k.steps))
        .sum();
    run.notes.insert(
        0,
        format!(
            "{} ops by {} clients on {} ConfigMaps ({} with unknown outcome, {} refused while down, {} odd answers); \
             faults: {}; checked in {:.1?} ({steps} search steps), {} key histories undecided",
            run.ops(),
            shape.clients,
            shape.keys,
            run.unknown,
            run.refused,
            run.odd.len(),
            summarize(&run.fault_log),
            run.check_time,
            run.undecided(),
        ),
    );
    for odd in run.odd.iter().take(5) {
        run.notes.push(format!("odd answer: {odd}"));
    }
    Ok(run)
}

/// What a client learned from one call.
enum Sent {
    Answer(Output),
    /// Sent, but the outcome is unknown.
    Lost,
    /// Never reached the server (connection refused).
    Refused,
    /// An answer no correct server gives; the outcome is taken as unknown.
    Odd(String),
}

struct Api {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Api {
    fn new(cluster: &Cluster, timeout: Duration) -> Result<Api> {
        // Installs the TLS crypto provider as a side effect.
        cluster.http()?;
        let (token, ca) = cluster.credentials()?;
        let http = reqwest::blocking::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
            .timeout(timeout)
            .build()?;
        Ok(Api {
            http,
            base: format!("{}/api/v1/namespaces/default/configmaps", cluster.url()),
            token,
        })
    }

    fn body(key: &str, value: Value, rv: Option<u64>) -> Json {
        let mut meta = json!({ "name": key });
        if let Some(rv) = rv {
            meta["resourceVersion"] = json!(rv.to_string());
        }
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            "data": { "v": value.to_string() },
        })
    }

    fn call(&self, key: &str, input: Input) -> Sent {
        let url = format!("{}/{key}", self.base);
        let request = match input {
            Input::Get => self.http.get(&url),
            Input::Create { value } => self
                .http
                .post(&self.base)
                .json(&Self::body(key, value, None)),
            Input::Update {
                value,
                precondition,
            } => self
                .http
                .put(&url)
                .json(&Self::body(key, value, precondition)),
            Input::Delete => self.http.delete(&url),
        };
        let resp = match request.bearer_auth(&self.token).send() {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Sent::Refused,
            Err(_) => return Sent::Lost,
        };
        let status = resp.status().as_u16();
        let Ok(body) = resp.json::<Json>() else {
            // A body cut by a kill: the write may have happened.
            return Sent::Lost;
        };
        let rv = || {
            body["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let odd = || Sent::Odd(format!("{input:?} on {key}: {status} {body}"));
        match (input, status) {
            (Input::Get, 200) => {
                let value = body["data"]["v"].as_str().and_then(|s| s.parse().ok());
                match (value, rv()) {
                    (Some(value), Some(rv)) => Sent::Answer(Output::Found { value, rv }),
                    _ => odd(),
                }
            }
            (Input::Create { .. }, 200 | 201) | (Input::Update { .. }, 200) => match rv() {
                Some(rv) => Sent::Answer(Output::Written { rv }),
                None => odd(),
            },
            (Input::Delete, 200 | 202) => Sent::Answer(Output::Deleted),
            (_, 404) => Sent::Answer(Output::NotFound),
            (_, 409) => match (input, body["reason"].as_str()) {
                (Input::Create { .. }, Some("AlreadyExists")) => {
                    Sent::Answer(Output::AlreadyExists)
                }
                (Input::Update { .. }, Some("Conflict")) => Sent::Answer(Output::Conflict),
                _ => odd(),
            },
            // Shed, unavailable, timed out: may or may not have happened.
            (_, 429 | 500..=599) => Sent::Lost,
            _ => odd(),
        }
    }
}

/// One client's random operations until `stop`.
fn client_loop(
    api: &Api,
    id: usize,
    keys: &[String],
    seed: u64,
    t0: Instant,
    stop: &AtomicBool,
) -> (Vec<Op>, usize, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ops = Vec::new();
    let mut refused = 0;
    let mut odd = Vec::new();
    // The last resourceVersion this client saw per key: conditional updates
    // name it, so some are current and some stale.
    let mut seen = vec![1u64; keys.len()];
    let mut seq: Value = 0;
    let now = || t0.elapsed().as_nanos() as u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.random_range(0..keys.len());
        seq += 1;
        // Unique per write: a read names the write it saw.
        let value = (id as u64 + 1) * 1_000_000_000 + seq;
        let input = match rng.random_range(0..100) {
            0..35 => Input::Get,
            35..50 => Input::Create { value },
            50..72 => Input::Update {
                value,
                precondition: Some(seen[k]),
            },
            72..85 => Input::Update {
                value,
                precondition: None,
            },
            _ => Input::Delete,
        };
        let call = now();
        let sent = api.call(&keys[k], input);
        let ret = now();
        let ret = match sent {
            Sent::Answer(out) => {
                match out {
                    Output::Found { rv, .. } | Output::Written { rv } => seen[k] = rv,
                    _ => {}
                }
                Some((ret, out))
            }
            Sent::Lost => None,
            Sent::Odd(what) => {
                odd.push(what);
                None
            }
            Sent::Refused => {
                refused += 1;
                // The server is down: do not spin while it restarts.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if ret.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        ops.push(Op {
            client: id,
            key: keys[k].clone(),
            input,
            call,
            ret,
        });
    }
    (ops, refused, odd)
}

/// One trial: clients run for `shape.duration` while faults are injected
/// from this thread; returns the history.
fn run_trial(
    target: &mut Target,
    shape: Shape,
    seed: u64,
    trial: u32,
    run: &mut Run,
) -> Result<Vec<Op>> {
    let keys: Vec<String> = (0..shape.keys)
        .map(|k| format!("lin-{trial}-{k}"))
        .collect();
    let apis = (0..shape.clients)
        .map(|_| Api::new(&target.cluster, shape.request_timeout))
        .collect::<Result<Vec<_>>>()?;
    let probe = Api::new(&target.cluster, Duration::from_secs(5))?;
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let (results, faults) = std::thread::scope(|s| {
        let handles: Vec<_> = apis
            .iter()
            .enumerate()
            .map(|(id, api)| {
                let keys = &keys;
                let stop = &stop;
                s.spawn(move || {
                    client_loop(api, id, keys, seed.wrapping_add(id as u64 + 1), t0, stop)
                })
            })
            .collect();
        let faults = inject_faults(target, &probe, shape, &mut rng, t0, run);
        stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        (results, faults)
    });
    faults?;
    let mut history = Vec::new();
    for r in results {
        let Ok((ops, refused, odd)) = r else {
            bail!("a client thread panicked");
        };
        history.extend(ops);
        run.refused += refused;
        run.odd.extend(odd);
    }
    Ok(history)
}

/// The faults, one after another with a little quiet between them, until
/// the run's time is up. Each one is repaired before the next, and its
/// recovery is the time from the fault until a read answers again.
fn inject_faults(
    target: &mut Target,
    probe: &Api,
    shape: Shape,
    rng: &mut StdRng,
    t0: Instant,
    run: &mut Run,
) -> Result<()> {
    let mut n = 0usize;
    loop {
        let quiet = Duration::from_millis(rng.random_range(1000..2500));
        if t0.elapsed() + quiet + Duration::from_secs(3) >= shape.duration {
            break;
        }
        std::thread::sleep(quiet);
        let fault_at = Instant::now();
        let what = match &mut target.etcd {
            None => {
                restart_server(&mut target.cluster)?;
                "server kill -9".to_string()
            }
            Some(etcd) => match n % 3 {
                2 => {
                    restart_server(&mut target.cluster)?;
                    "server kill -9".to_string()
                }
                i => {
                    let leader = etcd.leader()?;
                    // The leader first, then a follower.
                    let victim = if i == 0 {
                        leader
                    } else {
                        (leader + 1 + rng.random_range(0..2)) % 3
                    };
                    etcd.kill(victim);
                    // The member stays down while the clients keep going.
                    std::thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
                    etcd.restart(victim)?;
                    if victim == leader {
                        format!("etcd leader m{victim} kill -9")
                    } else {
                        format!("etcd member m{victim} kill -9")
                    }
                }
            },
        };
        wait_for(
            "the API to answer after a fault",
            Duration::from_secs(60),
            || Ok(matches!(probe.call("lin-probe", Input::Get), Sent::Answer(_)).then_some(())),
        )?;
        let took = fault_at.elapsed();
        run.recovery = Some(run.recovery.map_or(took, |r| r.max(took)));
        run.faults += 1;
        run.fault_log.push(what);
        n += 1;
    }
    Ok(())
}

/// "server kill -9 ×5, etcd leader m0 kill -9" rather than every entry.
fn summarize(faults: &[String]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for f in faults {
        match counted.iter_mut().find(|(w, _)| *w == f) {
            Some((_, c)) => *c += 1,
            None => counted.push((f, 1)),
        }
    }
    let mut out = String::new();
    for (i, (w, c)) in counted.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{w}");
        if *c > 1 {
            let _ = write!(out, " ×{c}");
        }
    }
    out
}

fn restart_server(cluster: &mut Cluster) -> Result<()> {
    cluster.kill9()?;
    cluster.spawn()?;
    cluster.wait_ready()
}

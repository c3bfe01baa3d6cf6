//! Component crashes: the scheduler, the controller manager and the kubelet
//! die (`kill -9`) at random moments of a rollout, and the cluster must
//! still converge, with no duplicate pods and no orphaned instances.
//!
//! **Setup.** The control plane split into processes, as `wasmkube server
//! --no-node --disable-scheduler --disable-controller-manager` plus
//! `wasmkube scheduler`, `wasmkube controller-manager` (with the kubeconfigs
//! the server wrote for them) and one node, `wasmkube agent`, so each
//! component can be killed alone. The scheduler and the controller manager
//! get a fixed `--identity`, so a restarted process leads at once instead of
//! waiting out its dead predecessor's Lease (15 s; that wait is Kubernetes'
//! behaviour too, and would only add the same constant to every trial).
//!
//! **Trial.** A Deployment of several replicas (default strategy: 25 %
//! maxSurge and maxUnavailable) changes its template (env `TRIAL=<n>`); after
//! a random 0–2.5 s one component (round-robin over the three, so every one
//! is hit in the reduced run too) gets `kill -9`, and after another random
//! 0.3–3 s it is started again with the same flags and data. Then, polled
//! until a deadline:
//! - the Deployment's status has caught up with its generation and reads
//!   replicas = updated = ready = available = desired;
//! - exactly `replicas` live pods carry the new template, all Running and
//!   Ready on the node, and no pod (live or terminating) of an older one
//!   is left: more than `replicas` new pods is a duplicate;
//! - one ReplicaSet has replicas;
//! - the kubelet's running instances (its Summary API, `/stats/summary`
//!   through the API server's node proxy: one entry per pod it has a worker
//!   for, with its running containers) are exactly the new pods: an instance
//!   of a pod that is gone or not bound here is orphaned.
//!
//! Not converging by the deadline is a loss (named by what was still wrong:
//! duplicates, orphans, old pods, a stuck status). The live pods are also
//! checked on every poll against the rolling update's bound (desired +
//! maxSurge): more is a duplicate even if it later heals. Recovery time is
//! restart → converged.
//!
//! **410 relist.** Every component must survive its watches' history being
//! compacted away: on `410 Gone` it lists again instead of retrying the
//! dead resourceVersion forever. The server runs with
//! `--etcd-compaction-interval 1s --compaction-keep-revisions 1` and the
//! scheduler and controller manager with `--leader-elect=false` (a pause
//! longer than the renew deadline would otherwise make them restart their
//! work from a fresh list, never resuming a watch). All three components
//! are frozen (SIGSTOP), a marker write is made, the API server is killed
//! and restarted (its watch cache starts empty, so an old resourceVersion
//! can only be served from the store's history), the Deployment scales up,
//! and once the server's log shows compaction past the marker the
//! components are thawed (SIGCONT). Each one resumes its watches from
//! resourceVersions older than the compacted revision. Then the cluster
//! must converge to the scale-up, and no component may log more than a few
//! watch errors after the thaw (an error loop logs one every backoff).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use wasmkube_e2e::{Agent, AgentOptions, Cluster, Component, tail, wait_for};

use crate::report::{Mode, Outcome};

const DEPLOYMENT: &str = "rollout";
const NODE: &str = "node-1";
/// How long a trial may take to converge after the restart.
const CONVERGE: Duration = Duration::from_secs(180);
/// Errors one watch may log after the thaw: the dead connection, its 410,
/// and a retry or two; an error loop logs one per backoff step for as long
/// as it lasts. The bound is per kind, not per process: the controller
/// manager watches Pods from about six controllers, each getting one 410.
const MAX_WATCH_ERRORS: usize = 8;

/// The most errors logged for any one watch: lines are grouped by their
/// text after the timestamp with numbers (resourceVersions) removed.
fn max_errors_per_watch(errors: &[&str]) -> usize {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for line in errors {
        let text = line.split_once(' ').map_or(*line, |(_, rest)| rest);
        let key: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        *counts.entry(key).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// A component the scenario kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Scheduler,
    ControllerManager,
    Kubelet,
}

impl Target {
    const ALL: [Target; 3] = [
        Target::Scheduler,
        Target::ControllerManager,
        Target::Kubelet,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::Scheduler => "scheduler",
            Target::ControllerManager => "controller-manager",
            Target::Kubelet => "kubelet",
        }
    }
}

/// The control plane split into processes, and one node.
struct Split {
    cluster: Cluster,
    scheduler: Component,
    controller_manager: Component,
    agent: Agent,
}

impl Split {
    fn start(server_args: &[&str], component_args: &[&[&str]; 2]) -> Result<Split> {
        let mut args = vec!["--disable-scheduler", "--disable-controller-manager"];
        args.extend_from_slice(server_args);
        let cluster = Cluster::start_without_node(&args)?;
        let data = cluster.data_dir();
        let scheduler = Component::spawn(
            "scheduler",
            &data.join("scheduler.kubeconfig"),
            component_args[0],
        )?;
        let controller_manager = Component::spawn(
            "controller-manager",
            &data.join("controller-manager.kubeconfig"),
            component_args[1],
        )?;
        let token = cluster.create_join_token()?;
        let agent = Agent::start(&cluster.url(), &token, NODE, AgentOptions::default())?;
        cluster.push_sample("idle")?;
        Ok(Split {
            cluster,
            scheduler,
            controller_manager,
            agent,
        })
    }

    fn kill(&mut self, target: Target) -> Result<()> {
        match target {
            Target::Scheduler => self.scheduler.kill9(),
            Target::ControllerManager => self.controller_manager.kill9(),
            Target::Kubelet => self.agent.kill9(),
        }
    }

    fn restart(&mut self, target: Target) -> Result<()> {
        match target {
            Target::Scheduler => self.scheduler.respawn(),
            Target::ControllerManager => self.controller_manager.respawn(),
            Target::Kubelet => self.agent.respawn(),
        }
    }

    fn pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Scheduler => self.scheduler.pid(),
            Target::ControllerManager => self.controller_manager.pid(),
            Target::Kubelet => self.agent.pid(),
        }
    }

    fn log(&self, target: Target) -> String {
        match target {
            Target::Scheduler => self.scheduler.log(),
            Target::ControllerManager => self.controller_manager.log(),
            Target::Kubelet => self.agent.log(),
        }
    }

    /// Every log, for a report of what went wrong.
    fn save_logs(&self, mode: &Mode, label: &str) {
        let dir = mode.work_dir.join("component-crash").join(label);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let _ = std::fs::write(dir.join("server.log"), self.cluster.server_log());
        for t in Target::ALL {
            let _ = std::fs::write(dir.join(format!("{}.log", t.name())), self.log(t));
        }
    }

    fn get_json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.cluster.kubectl_ok(&all)?;
        serde_json::from_str(&text).context("kubectl's JSON")
    }

    /// UIDs of the pods the kubelet runs an instance of (a worker with at
    /// least one running container), from its Summary API.
    fn instances(&self) -> Result<BTreeSet<String>> {
        let path = format!("/api/v1/nodes/{NODE}/proxy/stats/summary");
        let summary: Value =
            serde_json::from_str(&self.cluster.kubectl_ok(&["get", "--raw", &path])?)
                .context("the kubelet's summary")?;
        Ok(summary["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["containers"].as_array().is_some_and(|c| !c.is_empty()))
            .filter_map(|p| p["podRef"]["uid"].as_str().map(str::to_string))
            .collect())
    }

    fn deploy(&self, replicas: u32) -> Result<()> {
        let manifest = format!(
            r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{DEPLOYMENT}","labels":{{"app":"{DEPLOYMENT}"}}}},
  "spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{DEPLOYMENT}"}}}},
    "template":{{"metadata":{{"labels":{{"app":"{DEPLOYMENT}"}}}},
      "spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"idle","image":"idle:v1","env":[{{"name":"TRIAL","value":"0"}}]}}]}}}}}}}}"#
        );
        let out = self
            .cluster
            .kubectl_stdin(&["apply", "-f", "-"], &manifest)?;
        if !out.status.success() {
            bail!("creating the Deployment: {}", wasmkube_e2e::stderr(&out));
        }
        Ok(())
    }

    fn set_trial(&self, trial: u32) -> Result<()> {
        self.cluster.kubectl_ok(&[
            "set",
            "env",
            &format!("deploy/{DEPLOYMENT}"),
            &format!("TRIAL={trial}"),
        ])?;
        Ok(())
    }
}

/// What one poll saw.
#[derive(Debug, Default)]
struct Seen {
    converged: bool,
    /// Live pods (not being deleted) of the Deployment.
    live: usize,
    /// Live pods of the current template.
    new: usize,
    /// Pods (live or terminating) of an older template.
    old: usize,
    /// Instances on the node of pods that no longer exist or are not bound
    /// there.
    orphans: BTreeSet<String>,
    /// Why it has not converged yet.
    why: String,
    /// Whether the node's instances could be read.
    instances_checked: bool,
}

fn trial_of(pod: &Value) -> Option<&str> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "TRIAL")?["value"]
        .as_str()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// One observation of the Deployment, its pods, ReplicaSets and the node's
/// instances against the desired state (`replicas` pods of `trial`).
fn observe(s: &Split, replicas: u32, trial: u32) -> Result<Seen> {
    let want = i64::from(replicas);
    let d = s.get_json(&["deploy", DEPLOYMENT])?;
    let pods = s.get_json(&["pods", "-l", &format!("app={DEPLOYMENT}")])?;
    let rs = s.get_json(&["rs", "-l", &format!("app={DEPLOYMENT}")])?;
    // The node proxy does not serve the kubelet's Summary API on every
    // build yet; without it the instance check is skipped (reported).
    let instances = s.instances().ok();
    let trial = trial.to_string();
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    let mut seen = Seen::default();
    let mut why = Vec::new();
    let mut new_uids = BTreeSet::new();
    let mut all_uids = BTreeSet::new();
    let mut new_ready = 0;
    for p in &items {
        let uid = p["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let terminating = !p["metadata"]["deletionTimestamp"].is_null();
        let bound_here = p["spec"]["nodeName"] == NODE;
        if bound_here {
            all_uids.insert(uid.clone());
        }
        if trial_of(p) != Some(trial.as_str()) {
            seen.old += 1;
        }
        if terminating {
            continue;
        }
        seen.live += 1;
        if trial_of(p) == Some(trial.as_str()) {
            seen.new += 1;
            new_uids.insert(uid);
            if bound_here && p["status"]["phase"] == "Running" && is_ready(p) {
                new_ready += 1;
            }
        }
    }
    seen.instances_checked = instances.is_some();
    let instances = instances.unwrap_or_else(|| new_uids.clone());
    seen.orphans = instances.difference(&all_uids).cloned().collect();
    let status = &d["status"];
    let generation = num(&d["metadata"]["generation"]);
    if num(&status["observedGeneration"]) < generation {
        why.push(format!(
            "status at generation {} of {generation}",
            num(&status["observedGeneration"])
        ));
    }
    for field in [
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
    ] {
        if num(&status[field]) != want {
            why.push(format!("{field}={}", num(&status[field])));
        }
    }
    if seen.new as i64 != want || new_ready != want {
        why.push(format!(
            "{} new pods, {new_ready} running and ready",
            seen.new
        ));
    }
    if seen.old > 0 {
        why.push(format!("{} pods of an older template", seen.old));
    }
    let scaled = rs["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| num(&r["spec"]["replicas"]) > 0)
        .count();
    if scaled != 1 {
        why.push(format!("{scaled} ReplicaSets with replicas"));
    }
    if instances != new_uids {
        why.push(format!(
            "instances {instances:?} are not the new pods {new_uids:?}"
        ));
    }
    seen.converged = why.is_empty();
    seen.why = why.join("; ");
    Ok(seen)
}

/// maxSurge of the default strategy (25 %, rounded up).
fn surge(replicas: u32) -> usize {
    replicas.div_ceil(4) as usize
}

/// Polls until converged; the error names what was still wrong. `max_live`
/// records the most live pods seen on any poll.
fn converge(s: &Split, replicas: u32, trial: u32, max_live: &mut usize) -> Result<Seen> {
    let deadline = Instant::now() + CONVERGE;
    let mut last = Seen::default();
    loop {
        match observe(s, replicas, trial) {
            Ok(seen) => {
                *max_live = (*max_live).max(seen.live);
                if seen.converged {
                    return Ok(seen);
                }
                last = seen;
            }
            Err(e) => last.why = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            let kind = if last.new > replicas as usize {
                "duplicate pods"
            } else if !last.orphans.is_empty() {
                "orphaned instances"
            } else if last.old > 0 {
                "old pods left"
            } else {
                "no convergence"
            };
            bail!(
                "{kind} after {}s: {} (orphans {:?})",
                CONVERGE.as_secs(),
                last.why,
                last.orphans
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The kill-and-restart trials.
fn rollout_trials(mode: &Mode) -> Result<Outcome> {
    let trials: u32 = if mode.ci { 3 } else { 10 };
    let replicas: u32 = if mode.ci { 3 } else { 5 };
    let mut rng = StdRng::seed_from_u64(mode.seed ^ 0xc0c0_c4a5);
    let mut s = Split::start(
        &[],
        &[
            &["--identity", "scheduler-under-test"],
            &["--identity", "controller-manager-under-test"],
        ],
    )?;
    s.scheduler.wait_leading()?;
    s.controller_manager.wait_leading()?;
    s.deploy(replicas)?;
    let mut max_live = 0;
    converge(&s, replicas, 0, &mut max_live).context("the first rollout")?;

    let mut outcome = Outcome {
        scenario: "component-crash".into(),
        backend: "embedded".into(),
        ..Outcome::default()
    };
    let mut recoveries: Vec<(Target, Duration)> = Vec::new();
    for trial in 1..=trials {
        let target = if mode.ci {
            Target::ALL[(trial as usize - 1) % Target::ALL.len()]
        } else {
            Target::ALL[rng.random_range(0..Target::ALL.len())]
        };
        let kill_after = Duration::from_millis(rng.random_range(0..2500));
        let down_for = Duration::from_millis(rng.random_range(300..3000));
        s.set_trial(trial)?;
        // The fault's timing, not a wait for a condition.
        std::thread::sleep(kill_after);
        s.kill(target)?;
        outcome.faults += 1;
        std::thread::sleep(down_for);
        s.restart(target)?;
        let restarted = Instant::now();
        max_live = 0;
        match converge(&s, replicas, trial, &mut max_live) {
            Ok(seen) => {
                if !seen.instances_checked {
                    outcome.notes.push(format!(
                        "trial {trial}: the node's instances were not readable (node proxy /stats/summary); orphan check skipped"
                    ));
                }
                recoveries.push((target, restarted.elapsed()));
            }
            Err(e) => {
                outcome.losses += 1;
                outcome.notes.push(format!(
                    "trial {trial} ({} killed {}ms into the rollout, down {}ms): {e:#}",
                    target.name(),
                    kill_after.as_millis(),
                    down_for.as_millis()
                ));
                s.save_logs(mode, &format!("trial-{trial}"));
                // The next trial starts from a state this one did not
                // reach; stop rather than report knock-on failures.
                break;
            }
        }
        let bound = replicas as usize + surge(replicas);
        if max_live > bound {
            outcome.losses += 1;
            outcome.notes.push(format!(
                "trial {trial} ({}): {max_live} live pods at once, over desired + maxSurge = {bound} (duplicates)",
                target.name()
            ));
        }
        outcome.trials += 1;
    }
    outcome.recovery = recoveries.iter().map(|(_, d)| *d).max();
    let per_target: Vec<String> = Target::ALL
        .iter()
        .filter_map(|t| {
            let times: Vec<Duration> = recoveries
                .iter()
                .filter(|(r, _)| r == t)
                .map(|(_, d)| *d)
                .collect();
            let max = times.iter().max()?;
            Some(format!(
                "{} ×{} (max {:.1}s)",
                t.name(),
                times.len(),
                max.as_secs_f64()
            ))
        })
        .collect();
    outcome.notes.insert(
        0,
        format!(
            "{trials} rollouts of {replicas} replicas, each with one kill -9 of the scheduler, controller manager or kubelet (agent) and a restart 0.3–3 s later; converged = status replicas/updated/ready/available = desired, exactly {replicas} new pods and no old ones, one scaled ReplicaSet, the node's instances = the new pods; recovered: {}",
            per_target.join(", ")
        ),
    );
    Ok(outcome)
}

/// Sends `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid}: {status}");
    }
    Ok(())
}

/// The highest `compacted store history revision=N` in `log`.
fn compacted_revision(log: &str) -> i64 {
    log.lines()
        .filter(|l| l.contains("compacted store history"))
        .filter_map(|l| {
            let at = l.find("revision=")? + "revision=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Log lines about a failed watch (kube's watcher errors as the components
/// log them, and their 410s).
fn watch_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            (lower.contains(" warn ") || lower.contains(" error "))
                && (lower.contains("watch") || lower.contains("410") || lower.contains("expired"))
        })
        .collect()
}

/// Whether `log` shows a 410 (an expired resourceVersion) reaching a watch.
fn saw_gone(log: &str) -> bool {
    let lower = log.to_ascii_lowercase();
    lower.contains("410") || lower.contains("too old resource version") || lower.contains("expired")
}

/// History compacted under frozen components, then resumed watches.
fn relist_after_compaction(mode: &Mode) -> Result<Outcome> {
    let replicas = 2;
    let mut s = Split::start(
        &[
            "--etcd-compaction-interval",
            "1s",
            "--compaction-keep-revisions",
            "1",
        ],
        &[&["--leader-elect=false"], &["--leader-elect=false"]],
    )?;
    for c in [&mut s.scheduler, &mut s.controller_manager] {
        c.wait_log("running without leader election", Duration::from_secs(60))?;
    }
    s.deploy(replicas)?;
    let mut max_live = 0;
    converge(&s, replicas, 0, &mut max_live).context("the first rollout")?;

    let mut outcome = Outcome {
        scenario: "watch-410-relist".into(),
        backend: "embedded".into(),
        trials: 1,
        ..Outcome::default()
    };
    let pids: Vec<(Target, u32)> = Target::ALL
        .iter()
        .map(|&t| {
            s.pid(t)
                .map(|p| (t, p))
                .with_context(|| format!("{} is not running", t.name()))
        })
        .collect::<Result<_>>()?;
    for (_, pid) in &pids {
        signal(*pid, "STOP")?;
    }
    // Thaw whatever happens next, so a failure does not leave frozen
    // processes behind the harness's kill on drop.
    let thaw = |pids: &[(Target, u32)]| {
        for (_, pid) in pids {
            let _ = signal(*pid, "CONT");
        }
    };
    let frozen = (|| -> Result<()> {
        let marker = s.cluster.kubectl_ok(&[
            "create",
            "configmap",
            "compaction-marker",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])?;
        let marker: i64 = marker
            .trim()
            .parse()
            .context("the marker's resourceVersion")?;
        s.cluster.kill9()?;
        s.cluster.spawn()?;
        s.cluster.wait_ready()?;
        s.cluster
            .kubectl_ok(&["scale", &format!("deploy/{DEPLOYMENT}"), "--replicas=3"])?;
        wait_for(
            "the store to compact past the marker",
            Duration::from_secs(60),
            || {
                let log = s.cluster.server_log();
                let since_restart = log.rsplit("--- restart ---").next().unwrap_or_default();
                Ok((compacted_revision(since_restart) > marker).then_some(()))
            },
        )?;
        outcome.faults += 1;
        Ok(())
    })();
    let logged_before: Vec<usize> = Target::ALL.iter().map(|&t| s.log(t).len()).collect();
    let thawed = Instant::now();
    thaw(&pids);
    frozen?;

    let converged = converge(&s, 3, 0, &mut max_live);
    if let Err(e) = &converged {
        outcome.losses += 1;
        outcome
            .notes
            .push(format!("no convergence after the thaw: {e:#}"));
    }
    outcome.recovery = converged.is_ok().then(|| thawed.elapsed());
    let mut seen = Vec::new();
    for (i, t) in Target::ALL.iter().enumerate() {
        let log = s.log(*t);
        let after = log.get(logged_before[i]..).unwrap_or_default();
        let errors = watch_errors(after);
        if max_errors_per_watch(&errors) > MAX_WATCH_ERRORS {
            outcome.losses += 1;
            outcome.notes.push(format!(
                "{}: {} watch errors after the thaw (an error loop); last: {}",
                t.name(),
                errors.len(),
                tail(&errors.join("\n"), 3)
            ));
        }
        seen.push(format!(
            "{} {} watch errors{}",
            t.name(),
            errors.len(),
            if saw_gone(after) { ", 410 seen" } else { "" }
        ));
    }
    if outcome.losses > 0 {
        s.save_logs(mode, "watch-410-relist");
    }
    outcome.notes.insert(
        0,
        format!(
            "scheduler, controller manager and kubelet frozen (SIGSTOP) while the API server restarted and compacted its history (keep 1 revision) past their watches, then thawed: they relist and the scale-up converges; after the thaw: {}",
            seen.join(", ")
        ),
    );
    Ok(outcome)
}

/// Runs both parts; see the module docs.
pub fn run(mode: &Mode) -> Result<Vec<Outcome>> {
    Ok(vec![rollout_trials(mode)?, relist_after_compaction(mode)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacted_revisions_are_read_from_the_server_log() {
        let log = "2026-11-26T04:00:00Z  INFO wasmkube_apiserver::storage::embedded::compactor: compacted store history revision=41\n\
                   x INFO y: compacted store history revision=97\n\
                   x INFO y: nothing to compact\n";
        assert_eq!(compacted_revision(log), 97);
        assert_eq!(compacted_revision(""), 0);
    }

    #[test]
    fn watch_errors_are_warnings_about_watches() {
        let log = "t  WARN wasmkube_scheduler: pod watch failed; retrying error=...410...\n\
                   t  INFO wasmkube_scheduler: scheduler started\n\
                   t  WARN wasmkube_client: renewing the lease failed\n";
        assert_eq!(watch_errors(log).len(), 1);
        let twice = [
            "t1 WARN x: watch failed rv 1 kind=Pod",
            "t2 WARN x: watch failed rv 2 kind=Pod",
            "t3 WARN x: watch failed rv 3 kind=Node",
        ];
        assert_eq!(max_errors_per_watch(&twice), 2);
        assert!(saw_gone(log));
    }

    #[test]
    fn trials_read_the_template_env() {
        let pod = serde_json::json!({"spec":{"containers":[{"env":[{"name":"A","value":"x"},{"name":"TRIAL","value":"3"}]}]}});
        assert_eq!(trial_of(&pod), Some("3"));
        assert_eq!(trial_of(&serde_json::json!({})), None);
        assert_eq!(surge(3), 1);
        assert_eq!(surge(5), 2);
    }
}

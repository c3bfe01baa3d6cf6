//! The logs of wasmkube's own components, as container logs of their
//! mirror pods ([`crate::mirror`]).
//!
//! A `tracing` layer ([`layer`]) routes every event of the process by its
//! target to one component (the storage module → `datastore`, the
//! apiserver → `apiserver`, …; see [`route`]) and hands the formatted line to
//! a bounded channel. The kubelet's writer ([`start_writer`]) drains that
//! channel into one log file per component in the same CRI format, with the
//! same size cap and rotation, as a container's log ([`crate::logs`]), so
//! `kubectl logs -n kube-system <mirror pod>` (`-f`, `--tail`, `--since`,
//! `--timestamps`, `--previous`) is served by the ordinary kubelet log route.
//!
//! Logging must never wait for the disk: when the channel is full the line is
//! dropped and counted, and the writer notes how many were lost. The layer
//! does nothing until [`activate`] is called (by `wasmkube server` and
//! `wasmkube agent`), so other commands pay one atomic load per event.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use wasmtime_wasi::cli::StdoutStream as _;

use crate::logs::{ContainerLog, LogHandle};
use crate::mirror;

/// Lines queued between the logging call sites and the writer; beyond it
/// lines are dropped (the call site never waits).
pub const CHANNEL_LINES: usize = 4096;

/// The file of a component's current run, below its folder.
const CURRENT: &str = "0.log";
/// The file of the previous run (`kubectl logs --previous`).
const PREVIOUS: &str = "previous.log";

/// One formatted log line and the component it belongs to (`None`: the
/// process's default component).
#[derive(Debug)]
struct Line {
    component: Option<&'static str>,
    text: String,
}

struct Sink {
    tx: mpsc::Sender<Line>,
    rx: Mutex<Option<mpsc::Receiver<Line>>>,
    default: &'static str,
    dropped: AtomicU64,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Starts collecting component logs in this process; `default` is the
/// component of events no rule of [`route`] claims (`apiserver` in the
/// all-in-one server, `agent` in an agent). Lines queue (up to
/// [`CHANNEL_LINES`]) until the kubelet's writer starts. Only the first call
/// counts.
pub fn activate(default: &'static str) {
    let _ = SINK.get_or_init(|| {
        let (tx, rx) = mpsc::channel(CHANNEL_LINES);
        Sink {
            tx,
            rx: Mutex::new(Some(rx)),
            default,
            dropped: AtomicU64::new(0),
        }
    });
}

/// Lines dropped so far because the writer fell behind.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// The component an event of `target` belongs to; `None` for the process's
/// default one.
pub fn route(target: &str) -> Option<&'static str> {
    const RULES: &[(&str, &str)] = &[
        ("wasmkube_apiserver::storage", mirror::DATASTORE),
        ("wasmkube_apiserver", mirror::APISERVER),
        ("wasmkube_scheduler", mirror::SCHEDULER),
        ("wasmkube_controllers", mirror::CONTROLLER_MANAGER),
        ("wasmkube_runtime", mirror::AGENT),
    ];
    RULES.iter().find_map(|(prefix, component)| {
        let matches = target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"));
        matches.then_some(*component)
    })
}

/// The `tracing` layer feeding component logs; install it next to the
/// usual formatter. Inactive until [`activate`].
pub fn layer() -> ComponentLogLayer {
    ComponentLogLayer
}

/// See [`layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ComponentLogLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for ComponentLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let Some(sink) = SINK.get() else { return };
        // A full channel is known before formatting: skip the work.
        if sink.tx.capacity() == 0 {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let meta = event.metadata();
        let text = format_line(
            jiff::Timestamp::now(),
            meta.level(),
            meta.target(),
            |visitor| event.record(visitor),
        );
        let line = Line {
            component: route(meta.target()),
            text,
        };
        if sink.tx.try_send(line).is_err() {
            sink.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `<time> <LEVEL> <target>: <message> key=value…`, as the stderr
/// formatter prints it without colours.
fn format_line(
    at: jiff::Timestamp,
    level: &tracing::Level,
    target: &str,
    record: impl FnOnce(&mut FieldVisitor),
) -> String {
    let mut visitor = FieldVisitor::default();
    record(&mut visitor);
    let mut text = format!("{at:.6} {level:>5} {target}: {}", visitor.message);
    text.push_str(&visitor.fields);
    // One event is one log line.
    if text.contains('\n') {
        text = text.replace('\n', " ");
    }
    text
}

#[derive(Default)]
struct FieldVisitor {
    message: String,
    fields: String,
}

impl Visit for FieldVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// Where a component's log files live below `dir`.
pub fn component_dir(dir: &Path, component: &str) -> PathBuf {
    dir.join(component)
}

/// The open log of each component, for the mirror pods.
#[derive(Debug, Clone)]
pub struct ComponentLog {
    /// The component's folder.
    pub dir: PathBuf,
    /// The current run's log.
    pub current: LogHandle,
    /// The previous run's log, when there was one.
    pub previous: Option<PathBuf>,
}

/// Opens one log per component in `dir` (the previous run's file kept as
/// `previous.log`) and starts the task writing what the layer collects into
/// them until `shutdown`. Lines of a component without a log go to the
/// default component's, or the first one's.
pub async fn start_writer(
    components: &[&'static str],
    dir: &Path,
    max_bytes: u64,
    shutdown: CancellationToken,
) -> std::io::Result<HashMap<&'static str, ComponentLog>> {
    let (logs, writers) = open_logs(components, dir, max_bytes).await?;
    let sink = SINK.get();
    let rx = sink.and_then(|s| match s.rx.lock() {
        Ok(mut rx) => rx.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    });
    let default = sink
        .map(|s| s.default)
        .filter(|d| writers.contains_key(d))
        .or_else(|| components.first().copied());
    tokio::spawn(write_lines(rx, writers, default, shutdown));
    Ok(logs)
}

async fn open_logs(
    components: &[&'static str],
    dir: &Path,
    max_bytes: u64,
) -> std::io::Result<(HashMap<&'static str, ComponentLog>, Writers)> {
    let mut logs = HashMap::new();
    let mut writers: Writers = HashMap::new();
    for component in components {
        let folder = component_dir(dir, component);
        tokio::fs::create_dir_all(&folder).await?;
        let current = folder.join(CURRENT);
        let previous = folder.join(PREVIOUS);
        let had_previous = match tokio::fs::try_exists(&current).await {
            Ok(true) => {
                for suffix in ["", ".1"] {
                    let from = PathBuf::from(format!("{}{suffix}", current.display()));
                    let to = PathBuf::from(format!("{}{suffix}", previous.display()));
                    match tokio::fs::rename(&from, &to).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            let _ = tokio::fs::remove_file(&to).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                true
            }
            _ => tokio::fs::try_exists(&previous).await.unwrap_or(false),
        };
        let log = ContainerLog::create(&current, max_bytes).await?;
        logs.insert(
            *component,
            ComponentLog {
                dir: folder,
                current: log.handle(),
                previous: had_previous.then_some(previous),
            },
        );
        // Components log to stderr, as Kubernetes' do.
        let stream = Box::into_pin(log.stderr().async_stream());
        writers.insert(*component, (log, stream));
    }
    Ok((logs, writers))
}

type Writers = HashMap<
    &'static str,
    (
        ContainerLog,
        std::pin::Pin<Box<dyn AsyncWrite + Send + Sync>>,
    ),
>;

async fn write_lines(
    rx: Option<mpsc::Receiver<Line>>,
    mut writers: Writers,
    default: Option<&'static str>,
    shutdown: CancellationToken,
) {
    if let Some(mut rx) = rx {
        let mut reported = 0;
        loop {
            let line = tokio::select! {
                () = shutdown.cancelled() => break,
                line = rx.recv() => match line {
                    Some(line) => line,
                    None => break,
                },
            };
            let target = line
                .component
                .filter(|c| writers.contains_key(c))
                .or(default);
            if let Some(target) = target {
                write_one(&mut writers, target, &line.text).await;
            }
            // Say where lines went missing, once the writer caught up.
            let dropped = dropped();
            if dropped > reported
                && rx.is_empty()
                && let Some(target) = default
            {
                let text = format!(
                    "{:.6}  WARN wasmkube_runtime::component_logs: {} log lines dropped (the writer fell behind)",
                    jiff::Timestamp::now(),
                    dropped - reported
                );
                write_one(&mut writers, target, &text).await;
                reported = dropped;
            }
        }
        // What was logged before the stop still lands.
        while let Ok(line) = rx.try_recv() {
            let target = line
                .component
                .filter(|c| writers.contains_key(c))
                .or(default);
            if let Some(target) = target {
                write_one(&mut writers, target, &line.text).await;
            }
        }
    } else {
        shutdown.cancelled().await;
    }
    for (_, (log, stream)) in writers {
        drop(stream);
        let _ = log.finish().await;
    }
}

async fn write_one(writers: &mut Writers, component: &str, text: &str) {
    let Some((_, stream)) = writers.get_mut(component) else {
        return;
    };
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    // A failed write (the file's writer ended on a disk error) loses the
    // line; logging it would only loop back here.
    let _ = stream.write_all(&bytes).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_route_to_their_components() {
        assert_eq!(
            route("wasmkube_apiserver::storage::embedded"),
            Some(mirror::DATASTORE)
        );
        assert_eq!(
            route("wasmkube_apiserver::storage"),
            Some(mirror::DATASTORE)
        );
        assert_eq!(route("wasmkube_apiserver::server"), Some(mirror::APISERVER));
        assert_eq!(route("wasmkube_apiserver"), Some(mirror::APISERVER));
        assert_eq!(route("wasmkube_scheduler"), Some(mirror::SCHEDULER));
        assert_eq!(
            route("wasmkube_controllers::replicaset"),
            Some(mirror::CONTROLLER_MANAGER)
        );
        assert_eq!(route("wasmkube_runtime::pod_worker"), Some(mirror::AGENT));
        // A crate whose name only starts like one of ours is not ours.
        assert_eq!(route("wasmkube_apiserverx"), None);
        assert_eq!(route("wasmkube::server"), None);
        assert_eq!(route("kube_client::client"), None);
    }

    #[test]
    fn lines_look_like_the_stderr_formatter() {
        let at = jiff::Timestamp::UNIX_EPOCH;
        let line = format_line(at, &tracing::Level::INFO, "wasmkube_scheduler", |v| {
            v.message.push_str("scheduled\nnow");
            v.fields.push_str(" pod=default/web");
        });
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000Z  INFO wasmkube_scheduler: scheduled now pod=default/web"
        );
    }

    #[tokio::test]
    async fn a_new_run_keeps_the_previous_runs_log() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (first, writers) = open_logs(&["apiserver"], dir.path(), 1 << 20).await?;
        assert!(first["apiserver"].previous.is_none());
        drop(writers);
        tokio::fs::write(&first["apiserver"].current.path, b"old\n").await?;
        let (second, _writers) = open_logs(&["apiserver"], dir.path(), 1 << 20).await?;
        let previous = second["apiserver"]
            .previous
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no previous log"))?;
        assert_eq!(tokio::fs::read(&previous).await?, b"old\n");
        assert_eq!(
            tokio::fs::read(&second["apiserver"].current.path).await?,
            b""
        );
        Ok(())
    }

    /// The only test that activates the process-wide sink.
    #[tokio::test]
    async fn events_land_in_their_components_log_in_the_cri_format() -> anyhow::Result<()> {
        use tracing_subscriber::layer::SubscriberExt as _;
        activate(mirror::APISERVER);
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let logs = start_writer(
            &[mirror::APISERVER, mirror::SCHEDULER],
            dir.path(),
            1 << 20,
            shutdown.clone(),
        )
        .await?;
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "wasmkube_scheduler", pod = "default/web", "bound");
            tracing::warn!(target: "kube_client", "unrouted");
            // Routed to a component without a log: the default one.
            tracing::info!(target: "wasmkube_runtime", "kubelet line");
        });
        let scheduler = logs[mirror::SCHEDULER].current.path.clone();
        let apiserver = logs[mirror::APISERVER].current.path.clone();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let s = String::from_utf8(crate::logs::read_all(&scheduler).await?)?;
            let a = String::from_utf8(crate::logs::read_all(&apiserver).await?)?;
            if s.contains("bound") && a.contains("kubelet line") {
                let line = s.lines().next().unwrap_or_default();
                let parsed = crate::logs::parse_line(line.as_bytes())
                    .ok_or_else(|| anyhow::anyhow!("not a CRI line: {line}"))?;
                assert!(parsed.full);
                assert!(line.split(' ').nth(1) == Some("stderr"), "{line}");
                assert!(
                    String::from_utf8_lossy(parsed.content)
                        .ends_with("INFO wasmkube_scheduler: bound pod=default/web"),
                    "{line}"
                );
                assert!(a.contains("WARN kube_client: unrouted"), "{a}");
                assert!(!s.contains("unrouted"), "{s}");
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "lines not written: scheduler {s:?}, apiserver {a:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        Ok(())
    }
}

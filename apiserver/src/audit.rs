//! The audit log: one JSON line per request in the `audit.k8s.io/v1`
//! `Event` shape at level `Metadata` — who (user, source IP, user agent),
//! what (verb, URI, object reference), when (received and completed) and the
//! result (response code). Mutating requests by default, every request on
//! request. Request and response bodies are never recorded (Secrets!), nor
//! any header but the user agent (tokens!).
//!
//! Events are queued on a bounded channel and written by a task of their
//! own, off the request path; when the queue is full an event is dropped,
//! counted and warned about rather than slowing the API down. The file is
//! rotated by size with lumberjack's (Kubernetes') backup names
//! (`audit-2006-01-02T15-04-05.000.log`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::limits::{RequestClass, RequestScope};

/// The response header carrying a request's audit ID (and the request
/// header a client may set it with), as in Kubernetes.
pub const AUDIT_ID_HEADER: &str = "audit-id";
/// `--audit-log-path -` writes to standard output.
pub const STDOUT_PATH: &str = "-";
/// Longest user agent recorded (Kubernetes truncates at the same length).
const MAX_USER_AGENT: usize = 1024;
/// Largest response body read back for the name of a created object.
const MAX_CREATED_BODY: u64 = 1024 * 1024;
/// Events written per batch.
const BATCH: usize = 256;
/// lumberjack's backup timestamp layout, `2006-01-02T15-04-05.000`.
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

/// Where and what to audit.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The log file (`--audit-log-path`); `-` = standard output; `None` =
    /// no audit log (the default, as in Kubernetes).
    pub path: Option<PathBuf>,
    /// Rotate the file before it grows past this many bytes
    /// (`--audit-log-maxsize`, in megabytes on the command line); 0 = never.
    pub max_size_bytes: u64,
    /// Rotated files kept (`--audit-log-maxbackup`); 0 = all.
    pub max_backups: usize,
    /// Rotated files older than this are deleted (`--audit-log-maxage`);
    /// `None` = kept regardless of age.
    pub max_age: Option<Duration>,
    /// Also record reads (get, list, watch), not only mutating requests.
    pub all_requests: bool,
    /// Events queued for the writer before new ones are dropped.
    pub queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: None,
            // Bounded by default (Kubernetes' 0 means unbounded): edge
            // machines have small disks.
            max_size_bytes: 100 * 1024 * 1024,
            max_backups: 10,
            max_age: None,
            all_requests: false,
            queue_capacity: 10_000,
        }
    }
}

/// Why the audit log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("audit log {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One audit record (`audit.k8s.io/v1` `Event`, level `Metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub api_version: String,
    pub level: String,
    #[serde(rename = "auditID")]
    pub audit_id: String,
    /// `ResponseComplete`; long-running requests also get `ResponseStarted`
    /// when their response headers are sent.
    pub stage: String,
    #[serde(rename = "requestURI")]
    pub request_uri: String,
    pub verb: String,
    pub user: EventUser,
    /// The user the request ran as (`kubectl --as`), when impersonating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<EventUser>,
    #[serde(rename = "sourceIPs", default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    pub request_received_timestamp: String,
    pub stage_timestamp: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `authentication.k8s.io/v1` `UserInfo`; empty for unauthenticated requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventUser {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

impl From<&crate::auth::UserInfo> for EventUser {
    fn from(user: &crate::auth::UserInfo) -> Self {
        Self {
            username: user.name.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
        }
    }
}

/// The object a resource request is about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
}

/// The response's code (the `Status` message is not recorded: at level
/// Metadata Kubernetes records no response content).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseStatus {
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub code: u16,
}

/// The audit log's handle: cheap to clone; a disabled log records nothing.
#[derive(Clone, Default)]
pub struct AuditLog(Option<Arc<Inner>>);

struct Inner {
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
    all_requests: bool,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("enabled", &self.0.is_some())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditLog {
    /// A log that records nothing.
    pub fn disabled() -> Self {
        Self(None)
    }

    /// Opens the log `config` asks for (or none) and starts its writer,
    /// which runs until `stop` is cancelled, then writes what is queued and
    /// ends ([`AuditLog::finished`]).
    pub async fn start(config: &AuditConfig, stop: CancellationToken) -> Result<Self, Error> {
        let Some(path) = config.path.clone() else {
            return Ok(Self::disabled());
        };
        let sink = if path.as_os_str() == STDOUT_PATH {
            Sink::Stdout
        } else {
            let (max_size, max_backups, max_age) =
                (config.max_size_bytes, config.max_backups, config.max_age);
            let opened = tokio::task::spawn_blocking(move || {
                RotatingFile::open(&path, max_size, max_backups, max_age)
            })
            .await
            .map_err(|e| Error::Open {
                path: config.path.clone().unwrap_or_default(),
                source: std::io::Error::other(e.to_string()),
            })??;
            Sink::File(opened)
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let writer = tokio::spawn(write_events(rx, sink, stop));
        Ok(Self(Some(Arc::new(Inner {
            tx,
            dropped: AtomicU64::new(0),
            all_requests: config.all_requests,
            writer: std::sync::Mutex::new(Some(writer)),
        }))))
    }

    /// Whether events are recorded at all.
    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// Waits until the writer has written everything and ended (after the
    /// stop token passed to [`AuditLog::start`] was cancelled).
    pub async fn finished(&self) {
        let handle = self
            .0
            .as_ref()
            .and_then(|i| i.writer.lock().ok().and_then(|mut w| w.take()));
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::warn!(error = %e, "the audit log writer failed");
        }
    }

    /// Queues `event` without waiting: a full queue drops it (counted).
    pub fn submit(&self, event: Event) {
        let Some(inner) = &self.0 else { return };
        match inner.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                // Warn on the first drop and then every thousandth, so a
                // flood does not turn into a flood of warnings.
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::warn!(
                        dropped = n,
                        "audit log queue full: events dropped (the log cannot keep up)"
                    );
                }
            }
            // After shutdown: nothing is listening any more.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Starts the record of `req` when it is to be audited.
    pub(crate) fn begin(
        &self,
        req: &Request,
        scope: &Arc<RequestScope>,
        audit_id: &str,
        received: jiff::Timestamp,
    ) -> Option<Pending> {
        let inner = self.0.as_ref()?;
        let attrs = &scope.attrs;
        let mutating = matches!(
            *req.method(),
            http::Method::POST | http::Method::PUT | http::Method::PATCH | http::Method::DELETE
        );
        if !mutating && !inner.all_requests {
            return None;
        }
        let object_ref = attrs.resource_request.then(|| ObjectReference {
            resource: attrs.resource.clone(),
            namespace: attrs.namespace.clone(),
            name: attrs.name.clone(),
            api_group: attrs.api_group.clone(),
            api_version: attrs.api_version.clone(),
            subresource: attrs.subresource.clone(),
        });
        // A create names its object in the body; the response has it.
        let needs_name = attrs.resource_request
            && attrs.verb == "create"
            && attrs.name.is_empty()
            && attrs.subresource.is_empty();
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .map(truncate_user_agent)
            .unwrap_or_default();
        let source_ips = req
            .extensions()
            .get::<crate::server::PeerAddr>()
            .map(|p| vec![p.0.ip().to_string()])
            .unwrap_or_default();
        let request_uri = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| req.uri().path().to_string());
        let verb = if attrs.verb.is_empty() {
            req.method().as_str().to_ascii_lowercase()
        } else {
            attrs.verb.clone()
        };
        let event = Event {
            kind: "Event".to_string(),
            api_version: "audit.k8s.io/v1".to_string(),
            level: "Metadata".to_string(),
            audit_id: audit_id.to_string(),
            stage: String::new(),
            request_uri,
            verb,
            user: EventUser::default(),
            impersonated_user: None,
            source_ips,
            user_agent,
            object_ref,
            response_status: None,
            request_received_timestamp: timestamp(received),
            stage_timestamp: String::new(),
            annotations: BTreeMap::new(),
        };
        Some(Pending {
            log: self.clone(),
            scope: scope.clone(),
            event,
            needs_name,
            code: None,
        })
    }
}

/// An audit record waiting for its response; recorded when dropped — after
/// the response body was sent, or when the request was abandoned.
pub(crate) struct Pending {
    log: AuditLog,
    scope: Arc<RequestScope>,
    event: Event,
    needs_name: bool,
    code: Option<u16>,
}

impl Pending {
    /// Notes `resp`'s code (and a created object's name), records
    /// `ResponseStarted` for long-running requests, and returns the response
    /// carrying the record until its body is done.
    pub(crate) async fn finish(mut self, resp: Response) -> Response {
        self.code = Some(resp.status().as_u16());
        let resp = if self.needs_name && resp.status().is_success() {
            self.read_created_name(resp).await
        } else {
            resp
        };
        if self.scope.class.is_long_running()
            || matches!(self.scope.class, RequestClass::Transfer { .. })
        {
            let started = self.record("ResponseStarted");
            self.log.submit(started);
        }
        crate::limits::hold(resp, self)
    }

    /// The name and namespace of the object a create made, from the
    /// response (only those fields are kept).
    async fn read_created_name(&mut self, resp: Response) -> Response {
        if !crate::limits::is_json(&resp)
            || resp
                .body()
                .size_hint()
                .upper()
                .is_none_or(|n| n > MAX_CREATED_BODY)
        {
            return resp;
        }
        let (parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_CREATED_BODY as usize).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "reading a create response for the audit log");
                return ApiError::internal("an internal error occurred while serving the request")
                    .into_response();
            }
        };
        #[derive(Deserialize)]
        struct Meta {
            #[serde(default)]
            name: String,
            #[serde(default)]
            namespace: String,
        }
        #[derive(Deserialize)]
        struct Created {
            metadata: Option<Meta>,
        }
        if let Ok(Created {
            metadata: Some(meta),
        }) = serde_json::from_slice::<Created>(&bytes)
            && let Some(r) = self.event.object_ref.as_mut()
        {
            r.name = meta.name;
            if r.namespace.is_empty() {
                r.namespace = meta.namespace;
            }
        }
        Response::from_parts(parts, Body::from(bytes))
    }

    fn record(&self, stage: &str) -> Event {
        let mut event = self.event.clone();
        event.stage = stage.to_string();
        event.stage_timestamp = timestamp(jiff::Timestamp::now());
        if let Some(user) = self.scope.user() {
            event.user = EventUser::from(user);
        }
        event.impersonated_user = self.scope.impersonated().map(EventUser::from);
        event.response_status = self.code.map(|code| ResponseStatus {
            metadata: serde_json::Map::new(),
            code,
        });
        event
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut event = self.record("ResponseComplete");
        if self.code.is_none() {
            // The client went away (or the request was cut off) before the
            // response: the request may still have taken effect.
            event.annotations.insert(
                "wasmkube.io/aborted".to_string(),
                "the request ended before a response was sent".to_string(),
            );
        }
        self.log.submit(event);
    }
}

/// The request's audit ID: the client's `Audit-ID` when it is a plain
/// token (as Kubernetes honours it), else a fresh UUID.
pub fn audit_id(headers: &HeaderMap) -> String {
    headers
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn truncate_user_agent(mut ua: String) -> String {
    if ua.len() > MAX_USER_AGENT {
        let mut cut = MAX_USER_AGENT;
        while !ua.is_char_boundary(cut) {
            cut -= 1;
        }
        ua.truncate(cut);
        ua.push_str("...(truncated)");
    }
    ua
}

/// RFC 3339 with microseconds, UTC, as Kubernetes writes audit timestamps.
fn timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
}

/// Writes queued events until `stop`, then the rest of the queue.
async fn write_events(mut rx: mpsc::Receiver<Event>, mut sink: Sink, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let open = tokio::select! {
            biased;
            n = rx.recv_many(&mut batch, BATCH) => n > 0,
            _ = stop.cancelled() => {
                rx.close();
                while let Ok(event) = rx.try_recv() {
                    batch.push(event);
                }
                false
            }
        };
        if !batch.is_empty() {
            let mut lines = Vec::with_capacity(batch.len());
            for event in batch.drain(..) {
                match serde_json::to_vec(&event) {
                    Ok(mut line) => {
                        line.push(b'\n');
                        lines.push(line);
                    }
                    Err(e) => tracing::warn!(error = %e, "encoding an audit event"),
                }
            }
            // File writes block: off the async workers.
            sink = match tokio::task::spawn_blocking(move || {
                sink.write_lines(&lines);
                sink
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "the audit log writer failed; auditing stops");
                    return;
                }
            };
        }
        if !open {
            return;
        }
    }
}

/// Where the lines go.
enum Sink {
    Stdout,
    File(RotatingFile),
}

impl Sink {
    fn write_lines(&mut self, lines: &[Vec<u8>]) {
        let result = match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                lines
                    .iter()
                    .try_for_each(|l| out.write_all(l))
                    .and_then(|()| out.flush())
            }
            Sink::File(f) => f.write_lines(lines),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "writing the audit log");
        }
    }
}

/// An append-only file rotated by size.
struct RotatingFile {
    path: PathBuf,
    file: BufWriter<File>,
    size: u64,
    max_size: u64,
    max_backups: usize,
    max_age: Option<Duration>,
}

impl RotatingFile {
    fn open(
        path: &Path,
        max_size: u64,
        max_backups: usize,
        max_age: Option<Duration>,
    ) -> Result<Self, Error> {
        let err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let file = open_append(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            size,
            max_size,
            max_backups,
            max_age,
        })
    }

    fn write_lines(&mut self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        for line in lines {
            let len = line.len() as u64;
            if self.max_size > 0 && self.size > 0 && self.size + len > self.max_size {
                self.rotate()?;
            }
            self.file.write_all(line)?;
            self.size += len;
        }
        self.file.flush()
    }

    /// Moves the current file to a timestamped backup, starts a new one and
    /// prunes old backups.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let mut at = jiff::Timestamp::now();
        let mut backup = backup_path(&self.path, at);
        // Several rotations within a millisecond: the next free name.
        while backup.exists() {
            at += jiff::SignedDuration::from_millis(1);
            backup = backup_path(&self.path, at);
        }
        fs::rename(&self.path, &backup)?;
        self.file = BufWriter::new(open_append(&self.path)?);
        self.size = 0;
        if let Err(e) = self.prune() {
            tracing::warn!(error = %e, "removing old audit log backups");
        }
        Ok(())
    }

    fn prune(&self) -> std::io::Result<()> {
        let mut backups = backups_of(&self.path)?;
        // Newest first: the names sort by time.
        backups.sort_by(|a, b| b.cmp(a));
        let now = SystemTime::now();
        for (i, backup) in backups.iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = self.max_age.is_some_and(|age| {
                fs::metadata(backup)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|d| d > age)
            });
            if too_many || too_old {
                fs::remove_file(backup)?;
            }
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Audit records name users and objects: owner only.
        options.mode(0o600);
    }
    options.open(path)
}

/// `<stem>` and `.<ext>` of the log file name, as backups are named.
fn name_parts(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// `<dir>/<stem>-2006-01-02T15-04-05.000<.ext>`.
fn backup_path(path: &Path, at: jiff::Timestamp) -> PathBuf {
    let (stem, ext) = name_parts(path);
    let millis = at.subsec_millisecond();
    let name = format!(
        "{stem}-{}.{millis:03}{ext}",
        at.strftime(BACKUP_TIME_FORMAT)
    );
    path.with_file_name(name)
}

/// The rotated backups of the log at `path`.
pub fn backups_of(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (stem, ext) = name_parts(path);
    let prefix = format!("{stem}-");
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(middle) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if is_backup_time(middle) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// `2006-01-02T15-04-05.000`: digits where the layout has them.
fn is_backup_time(s: &str) -> bool {
    const LAYOUT: &[u8] = b"0000-00-00T00-00-00.000";
    s.len() == LAYOUT.len()
        && s.bytes().zip(LAYOUT).all(|(c, l)| {
            if *l == b'0' {
                c.is_ascii_digit()
            } else {
                c == *l
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Event {
        Event {
            kind: "Event".into(),
            api_version: "audit.k8s.io/v1".into(),
            level: "Metadata".into(),
            audit_id: id.into(),
            stage: "ResponseComplete".into(),
            request_uri: "/api/v1/namespaces/default/pods".into(),
            verb: "create".into(),
            user: EventUser {
                username: "admin".into(),
                uid: "admin".into(),
                groups: vec!["system:masters".into()],
            },
            impersonated_user: None,
            source_ips: vec!["127.0.0.1".into()],
            user_agent: "kubectl/v1.32.0".into(),
            object_ref: Some(ObjectReference {
                resource: "pods".into(),
                namespace: "default".into(),
                name: "p".into(),
                api_version: "v1".into(),
                ..Default::default()
            }),
            response_status: Some(ResponseStatus {
                metadata: Default::default(),
                code: 201,
            }),
            request_received_timestamp: timestamp(jiff::Timestamp::UNIX_EPOCH),
            stage_timestamp: timestamp(jiff::Timestamp::UNIX_EPOCH),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn events_have_the_kubernetes_shape() -> Result<(), Box<dyn std::error::Error>> {
        let v = serde_json::to_value(event("abc"))?;
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["auditID"], "abc");
        assert_eq!(v["requestURI"], "/api/v1/namespaces/default/pods");
        assert_eq!(v["sourceIPs"][0], "127.0.0.1");
        assert_eq!(v["user"]["username"], "admin");
        assert_eq!(v["objectRef"]["apiVersion"], "v1");
        assert!(v["objectRef"].get("apiGroup").is_none());
        assert_eq!(v["responseStatus"]["code"], 201);
        assert_eq!(v["responseStatus"]["metadata"], serde_json::json!({}));
        assert_eq!(v["requestReceivedTimestamp"], "1970-01-01T00:00:00.000000Z");
        assert!(v.get("annotations").is_none());
        Ok(())
    }

    #[test]
    fn audit_ids_from_clients_must_be_plain() {
        let mut h = HeaderMap::new();
        h.insert(AUDIT_ID_HEADER, http::HeaderValue::from_static("req-42"));
        assert_eq!(audit_id(&h), "req-42");
        h.insert(AUDIT_ID_HEADER, http::HeaderValue::from_static("a\"b{}"));
        let generated = audit_id(&h);
        assert_ne!(generated, "a\"b{}");
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert!(uuid::Uuid::parse_str(&audit_id(&HeaderMap::new())).is_ok());
    }

    #[test]
    fn long_user_agents_are_truncated() {
        let ua = truncate_user_agent("é".repeat(1000));
        assert!(ua.ends_with("...(truncated)"));
        assert!(ua.len() <= MAX_USER_AGENT + "...(truncated)".len());
        assert_eq!(truncate_user_agent("kubectl".into()), "kubectl");
    }

    #[test]
    fn backups_are_named_like_lumberjack() -> Result<(), Box<dyn std::error::Error>> {
        let at: jiff::Timestamp = "2024-03-05T06:07:08.009Z".parse()?;
        let p = backup_path(Path::new("/var/log/audit.log"), at);
        assert_eq!(
            p,
            PathBuf::from("/var/log/audit-2024-03-05T06-07-08.009.log")
        );
        assert!(is_backup_time("2024-03-05T06-07-08.009"));
        assert!(!is_backup_time("2024-03-05T06-07-08"));
        assert!(!is_backup_time("x024-03-05T06-07-08.009"));
        Ok(())
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(1);
        let log = AuditLog(Some(Arc::new(Inner {
            tx,
            dropped: AtomicU64::new(0),
            all_requests: false,
            writer: std::sync::Mutex::new(None),
        })));
        log.submit(event("1"));
        log.submit(event("2"));
        log.submit(event("3"));
        assert_eq!(log.dropped(), 2);
        assert_eq!(AuditLog::disabled().dropped(), 0);
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_max_backups() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("audit.log");
        let line = serde_json::to_vec(&event("000"))?;
        let limit = (line.len() as u64 + 1) * 3;
        let stop = CancellationToken::new();
        let log = AuditLog::start(
            &AuditConfig {
                path: Some(path.clone()),
                max_size_bytes: limit,
                max_backups: 2,
                ..AuditConfig::default()
            },
            stop.clone(),
        )
        .await?;
        for i in 0..40 {
            log.submit(event(&format!("{i:0>3}")));
        }
        stop.cancel();
        log.finished().await;
        assert_eq!(log.dropped(), 0);
        let backups = backups_of(&path)?;
        assert_eq!(backups.len(), 2, "{backups:?}");
        let mut ids = Vec::new();
        for file in backups.iter().chain(std::iter::once(&path)) {
            let text = fs::read_to_string(file)?;
            assert!(
                text.len() as u64 <= limit,
                "{file:?} is {} bytes",
                text.len()
            );
            for l in text.lines() {
                ids.push(serde_json::from_str::<Event>(l)?.audit_id);
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(fs::metadata(file)?.permissions().mode() & 0o777, 0o600);
            }
        }
        // The newest events survive, in order.
        ids.sort();
        assert_eq!(ids.last().map(String::as_str), Some("039"));
        // Three lines a file: the last two full backups and the one line
        // written since.
        assert_eq!(ids.len(), 7, "{ids:?}");
        Ok(())
    }
}

//! Container log files: writing what guests print and reading it back for
//! `kubectl logs`.
//!
//! Each container attempt writes one file, `<pod dir>/<container>/<n>.log`,
//! in the CRI log format (`<RFC 3339 nano> <stdout|stderr> <P|F> <text>`), so
//! stdout and stderr interleave in the order they were written and every line
//! carries its own timestamp (`timestamps=true`, `sinceSeconds`). A guest's
//! writes go through a bounded channel to one writer task per attempt: the
//! guest waits when the disk is slower than it prints, and never blocks the
//! runtime. The file is capped; past the cap the current file is rotated to
//! `<n>.log.1` so a chatty guest cannot fill the disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// How many chunks a guest may have in flight before its writes wait.
const CHANNEL_CHUNKS: usize = 64;
/// The most one write may hand over at once (p1 writes are at most 4 KiB).
const MAX_WRITE: usize = 64 * 1024;
/// Default cap of one log file before it is rotated.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// Which guest stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// fd 1
    Stdout,
    /// fd 2
    Stderr,
}

impl StreamKind {
    fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

#[derive(Debug)]
struct Chunk {
    kind: StreamKind,
    at: jiff::Timestamp,
    bytes: Bytes,
}

/// The log of one container attempt while it is being written.
///
/// Hand [`ContainerLog::stdout`] and [`ContainerLog::stderr`] to the guest,
/// then call [`ContainerLog::finish`] once the guest is gone: it waits until
/// everything the guest printed is on disk.
pub struct ContainerLog {
    tx: mpsc::Sender<Chunk>,
    writer: JoinHandle<io::Result<()>>,
    progress: watch::Receiver<u64>,
    path: PathBuf,
}

impl ContainerLog {
    /// Creates (or appends to) the log file at `path`, creating its folder.
    pub async fn create(path: &Path, max_bytes: u64) -> io::Result<ContainerLog> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let written = file.metadata().await?.len();
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let (progress_tx, progress) = watch::channel(written);
        let writer = tokio::spawn(write_log(
            rx,
            file,
            written,
            path.to_path_buf(),
            max_bytes,
            progress_tx,
        ));
        Ok(ContainerLog {
            tx,
            writer,
            progress,
            path: path.to_path_buf(),
        })
    }

    /// The guest's stdout.
    pub fn stdout(&self) -> LogStream {
        LogStream {
            tx: self.tx.clone(),
            kind: StreamKind::Stdout,
        }
    }

    /// The guest's stderr.
    pub fn stderr(&self) -> LogStream {
        LogStream {
            tx: self.tx.clone(),
            kind: StreamKind::Stderr,
        }
    }

    /// A handle for readers that follow this log while it grows.
    pub fn handle(&self) -> LogHandle {
        LogHandle {
            path: self.path.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Waits until every chunk handed to the streams is written. The streams
    /// given to the guest must have been dropped, or this waits for them.
    pub async fn finish(self) -> io::Result<()> {
        drop(self.tx);
        match self.writer.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// A way to find and follow one attempt's log file. Its `progress` channel
/// closes when the writer is done, which is how followers know the container
/// ended.
#[derive(Debug, Clone)]
pub struct LogHandle {
    /// The log file.
    pub path: PathBuf,
    /// Bytes written so far; closed when the attempt's log is complete.
    pub progress: watch::Receiver<u64>,
}

async fn write_log(
    mut rx: mpsc::Receiver<Chunk>,
    mut file: tokio::fs::File,
    mut written: u64,
    path: PathBuf,
    max_bytes: u64,
    progress: watch::Sender<u64>,
) -> io::Result<()> {
    let mut buf = Vec::new();
    // Bytes of a line the guest has not finished yet, per stream: the CRI
    // format marks them `P` so readers can join them again.
    while let Some(first) = rx.recv().await {
        buf.clear();
        encode_chunk(&first, &mut buf);
        // Drain what else is queued so a burst becomes one write (small
        // enough that rotation keeps files near their cap).
        let batch = MAX_WRITE.min(usize::try_from(max_bytes / 4).unwrap_or(MAX_WRITE));
        while buf.len() < batch {
            match rx.try_recv() {
                Ok(chunk) => encode_chunk(&chunk, &mut buf),
                Err(_) => break,
            }
        }
        // Encoding multiplies short lines (each gets a timestamp and tags),
        // so the batch is written in pieces of whole lines, each checked
        // against the cap: a file passes it by at most one line.
        let mut rest: &[u8] = &buf;
        while !rest.is_empty() {
            let (piece, next) = rest.split_at(piece_len(rest, batch));
            if written > 0 && written + piece.len() as u64 > max_bytes {
                file.flush().await?;
                drop(file);
                let mut rotated = path.clone().into_os_string();
                rotated.push(".1");
                tokio::fs::rename(&path, PathBuf::from(rotated)).await?;
                file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await?;
                written = 0;
            }
            file.write_all(piece).await?;
            written += piece.len() as u64;
            rest = next;
        }
        file.flush().await?;
        progress.send_replace(written);
    }
    file.flush().await?;
    Ok(())
}

/// The length of the first piece of `encoded` to write: whole lines up to
/// `max` bytes, or the first line alone when it is longer.
fn piece_len(encoded: &[u8], max: usize) -> usize {
    if encoded.len() <= max {
        return encoded.len();
    }
    let within = &encoded[..max.max(1)];
    match within.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => encoded
            .iter()
            .position(|b| *b == b'\n')
            .map_or(encoded.len(), |i| i + 1),
    }
}

fn encode_chunk(chunk: &Chunk, out: &mut Vec<u8>) {
    let ts = format_timestamp(chunk.at);
    let mut rest: &[u8] = &chunk.bytes;
    while !rest.is_empty() {
        let (line, tag, next) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], b'F', &rest[i + 1..]),
            None => (rest, b'P', &rest[rest.len()..]),
        };
        out.extend_from_slice(ts.as_bytes());
        out.push(b' ');
        out.extend_from_slice(chunk.kind.as_str().as_bytes());
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        out.extend_from_slice(line);
        out.push(b'\n');
        rest = next;
    }
}

/// RFC 3339 with nanoseconds, as the CRI log format and kubectl use.
pub fn format_timestamp(ts: jiff::Timestamp) -> String {
    format!("{ts:.9}")
}

/// One of a guest's output streams, as wasmtime-wasi wants it.
#[derive(Clone)]
pub struct LogStream {
    tx: mpsc::Sender<Chunk>,
    kind: StreamKind,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogPipe {
            tx: self.tx.clone(),
            kind: self.kind,
            permit: None,
        })
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LogAsyncWriter {
            tx: PollSender::new(self.tx.clone()),
            kind: self.kind,
        })
    }
}

/// The WASI output stream: a write is accepted once a channel slot is
/// reserved, which is what makes a fast guest wait for the disk.
struct LogPipe {
    tx: mpsc::Sender<Chunk>,
    kind: StreamKind,
    permit: Option<mpsc::OwnedPermit<Chunk>>,
}

impl LogPipe {
    fn try_reserve(&mut self) -> StreamResult<bool> {
        if self.permit.is_some() {
            return Ok(true);
        }
        match self.tx.clone().try_reserve_owned() {
            Ok(permit) => {
                self.permit = Some(permit);
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StreamError::Closed),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {
        if self.permit.is_none()
            && let Ok(permit) = self.tx.clone().reserve_owned().await
        {
            self.permit = Some(permit);
        }
    }
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.try_reserve()? {
            return Err(StreamError::trap("write without a prior check-write"));
        }
        match self.permit.take() {
            Some(permit) => {
                permit.send(Chunk {
                    kind: self.kind,
                    at: jiff::Timestamp::now(),
                    bytes,
                });
                Ok(())
            }
            None => Err(StreamError::Closed),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Chunks are written in order by the writer task; nothing is held here.
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        if self.try_reserve()? {
            Ok(MAX_WRITE)
        } else {
            Ok(0)
        }
    }
}

/// The same stream for callers that use `AsyncWrite`.
struct LogAsyncWriter {
    tx: PollSender<Chunk>,
    kind: StreamKind,
}

impl AsyncWrite for LogAsyncWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.tx.poll_reserve(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Ok(())) => {
                let len = buf.len().min(MAX_WRITE);
                let chunk = Chunk {
                    kind: self.kind,
                    at: jiff::Timestamp::now(),
                    bytes: Bytes::copy_from_slice(&buf[..len]),
                };
                match self.tx.send_item(chunk) {
                    Ok(()) => Poll::Ready(Ok(len)),
                    Err(_) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One parsed line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// The timestamp as written.
    pub timestamp: &'a str,
    /// `false` for a fragment of a line the guest had not finished (`P`).
    pub full: bool,
    /// The text, without the newline.
    pub content: &'a [u8],
}

/// Parses one line of a log file (without its newline); `None` if malformed.
pub fn parse_line(line: &[u8]) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let full = match parts.next()? {
        b"F" => true,
        b"P" => false,
        _ => return None,
    };
    let content = parts.next().unwrap_or(&[]);
    Some(LogLine {
        timestamp,
        full,
        content,
    })
}

/// What a `containerLogs` request asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new lines until the container ends.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines written at or after this instant.
    pub since: Option<jiff::Timestamp>,
}

/// Turns log file content (complete lines only) into what the user sees,
/// joining `P` fragments to their line. Returns the rendered lines.
pub fn render_lines(data: &[u8], opts: &LogOptions) -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut pending: Option<Vec<u8>> = None;
    for raw in data.split(|b| *b == b'\n') {
        if raw.is_empty() {
            continue;
        }
        let Some(line) = parse_line(raw) else {
            continue;
        };
        if let Some(since) = opts.since
            && let Ok(ts) = line.timestamp.parse::<jiff::Timestamp>()
            && ts < since
        {
            continue;
        }
        let out = pending.get_or_insert_with(|| {
            let mut v = Vec::new();
            if opts.timestamps {
                v.extend_from_slice(line.timestamp.as_bytes());
                v.push(b' ');
            }
            v
        });
        out.extend_from_slice(line.content);
        if line.full {
            out.push(b'\n');
            if let Some(done) = pending.take() {
                lines.push(done);
            }
        }
    }
    if let Some(rest) = pending {
        lines.push(rest);
    }
    lines
}

/// Applies `tailLines` to rendered lines.
pub fn tail(lines: Vec<Vec<u8>>, tail_lines: Option<u64>) -> Vec<Vec<u8>> {
    match tail_lines {
        Some(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let skip = lines.len().saturating_sub(n);
            lines.into_iter().skip(skip).collect()
        }
        None => lines,
    }
}

/// What the kubelet knows about the logs of one container, for the HTTP server.
#[derive(Debug, Clone, Default)]
pub struct ContainerLogs {
    /// Folder of this container's log files.
    pub dir: PathBuf,
    /// The current attempt's log, once it started.
    pub current: Option<LogHandle>,
    /// The previous attempt's log file, if there was one.
    pub previous: Option<PathBuf>,
    /// Why the container is not running yet (e.g. `ContainerCreating`).
    pub waiting_reason: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct PodLogs {
    uid: String,
    containers: BTreeMap<String, ContainerLogs>,
}

/// Index of the log files of the pods on this node, keyed by namespace and
/// name: pod workers update it, the HTTP server reads it.
#[derive(Debug, Default)]
pub struct LogRegistry {
    pods: Mutex<HashMap<(String, String), PodLogs>>,
}

/// Why a log request cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The pod is not on this node.
    PodNotFound,
    /// The pod has no such container.
    ContainerNotFound,
    /// The container never started; the reason it waits.
    Waiting(String),
    /// `previous=true` but there is no previous attempt.
    NoPrevious,
}

impl LogRegistry {
    /// Records (or replaces) what is known about one container's logs.
    pub fn set(&self, namespace: &str, pod: &str, uid: &str, container: &str, logs: ContainerLogs) {
        let mut pods = match self.pods.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = pods
            .entry((namespace.to_string(), pod.to_string()))
            .or_default();
        if entry.uid != uid {
            *entry = PodLogs {
                uid: uid.to_string(),
                containers: BTreeMap::new(),
            };
        }
        entry.containers.insert(container.to_string(), logs);
    }

    /// Forgets a pod (only if it is still the same pod).
    pub fn remove(&self, namespace: &str, pod: &str, uid: &str) {
        let mut pods = match self.pods.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (namespace.to_string(), pod.to_string());
        if pods.get(&key).is_some_and(|p| p.uid == uid) {
            pods.remove(&key);
        }
    }

    /// Finds the log to read for a request.
    pub fn lookup(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogSource, LookupError> {
        let pods = match self.pods.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = pods
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or(LookupError::PodNotFound)?;
        let logs = entry
            .containers
            .get(container)
            .ok_or(LookupError::ContainerNotFound)?;
        if previous {
            return logs
                .previous
                .clone()
                .map(|path| LogSource {
                    path,
                    progress: None,
                })
                .ok_or(LookupError::NoPrevious);
        }
        match &logs.current {
            Some(h) => Ok(LogSource {
                path: h.path.clone(),
                progress: Some(h.progress.clone()),
            }),
            None => Err(LookupError::Waiting(
                logs.waiting_reason
                    .clone()
                    .unwrap_or_else(|| "ContainerCreating".to_string()),
            )),
        }
    }

    /// Number of pods known (for tests and leak checks).
    pub fn len(&self) -> usize {
        match self.pods.lock() {
            Ok(p) => p.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A log file to read, and for a live attempt the channel that says when it
/// grows and when it is complete.
#[derive(Debug, Clone)]
pub struct LogSource {
    /// The file.
    pub path: PathBuf,
    /// `None` for a finished attempt.
    pub progress: Option<watch::Receiver<u64>>,
}

/// Reads a log file, its rotated part first; a missing file reads as empty
/// (nothing printed yet).
pub async fn read_all(path: &Path) -> io::Result<Vec<u8>> {
    let (mut rotated, current) = read_parts(path).await?;
    rotated.extend_from_slice(&current);
    Ok(rotated)
}

/// The rotated part and the current file.
async fn read_parts(path: &Path) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut rotated = path.to_path_buf().into_os_string();
    rotated.push(".1");
    let read = |p: PathBuf| async move {
        match tokio::fs::read(p).await {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    };
    Ok((
        read(PathBuf::from(rotated)).await?,
        read(path.to_path_buf()).await?,
    ))
}

/// How much of a log file one read takes: requests hold at most about this
/// much (plus one over-long line) in memory, whatever the file size.
const READ_CHUNK: u64 = 64 * 1024;

/// A log as one byte sequence: its rotated part, then the current file (as
/// long as it was when the request started).
struct LogFiles {
    rotated: PathBuf,
    rotated_len: u64,
    current: PathBuf,
    current_len: u64,
}

impl LogFiles {
    async fn open(path: &Path) -> io::Result<LogFiles> {
        let mut rotated = path.to_path_buf().into_os_string();
        rotated.push(".1");
        let rotated = PathBuf::from(rotated);
        let len = |p: PathBuf| async move {
            match tokio::fs::metadata(&p).await {
                Ok(m) => Ok(m.len()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            }
        };
        Ok(LogFiles {
            rotated_len: len(rotated.clone()).await?,
            rotated,
            current: path.to_path_buf(),
            current_len: len(path.to_path_buf()).await?,
        })
    }

    fn len(&self) -> u64 {
        self.rotated_len + self.current_len
    }

    /// Bytes `start..end` of the sequence (shorter if a file shrank).
    async fn read(&self, start: u64, end: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(start)).unwrap_or(0));
        if start < self.rotated_len {
            read_range(&self.rotated, start, end.min(self.rotated_len), &mut out).await?;
        }
        if end > self.rotated_len {
            let from = start.saturating_sub(self.rotated_len);
            read_range(&self.current, from, end - self.rotated_len, &mut out).await?;
        }
        Ok(out)
    }
}

async fn read_range(path: &Path, start: u64, end: u64, out: &mut Vec<u8>) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if end <= start {
        return Ok(());
    }
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    file.seek(io::SeekFrom::Start(start)).await?;
    file.take(end - start).read_to_end(out).await?;
    Ok(())
}

/// How many complete `F` lines `data` holds (a line is complete when its
/// newline is in `data`; the first one only when `from_start`).
fn full_lines(data: &[u8], from_start: bool) -> usize {
    let mut lines = data.split(|b| *b == b'\n');
    if !from_start {
        lines.next();
    }
    let mut n = 0;
    let mut rest = lines.peekable();
    while let Some(l) = rest.next() {
        // The piece after the last newline is not a complete line.
        if rest.peek().is_some() && parse_line(l).is_some_and(|l| l.full) {
            n += 1;
        }
    }
    n
}

/// The end of the last complete `F` line in `data` (0 when none): `P`
/// fragments after it wait for the rest of their line.
fn last_full_line_end(data: &[u8]) -> usize {
    let mut end = data.len();
    while let Some(nl) = data[..end].iter().rposition(|b| *b == b'\n') {
        let start = data[..nl]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if parse_line(&data[start..nl]).is_none_or(|l| l.full) {
            return nl + 1;
        }
        end = start;
    }
    0
}

/// The last complete lines of `files` (read backwards from the end, a chunk
/// at a time, until more than `n` full lines are in hand), and where in the
/// sequence they end.
async fn read_tail(files: &LogFiles, n: u64) -> io::Result<(Vec<u8>, u64)> {
    let want = usize::try_from(n).unwrap_or(usize::MAX);
    let total = files.len();
    let mut start = total;
    let mut data: Vec<u8> = Vec::new();
    let mut full = 0;
    while start > 0 && full <= want {
        let from = start.saturating_sub(READ_CHUNK);
        let mut chunk = files.read(from, start).await?;
        // Only the new chunk and the line it completes need counting.
        let old_first = data
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| i + 1);
        let fresh = chunk.len() + old_first;
        chunk.extend_from_slice(&data);
        data = chunk;
        full += full_lines(&data[..fresh], false);
        start = from;
    }
    if start > 0 {
        // The first line is cut: drop it.
        let cut = data
            .iter()
            .position(|b| *b == b'\n')
            .map_or(data.len(), |i| i + 1);
        data.drain(..cut);
        start += cut as u64;
    }
    let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    data.truncate(end);
    Ok((data, start + end as u64))
}

/// Streams a log as rendered lines into `tx`: first what is there (after
/// `tailLines`), then, when following a live attempt, each new line until
/// the attempt ends. Stops early when the receiver goes away or the byte
/// limit is reached. Only the tail is read for `tailLines`, and the rest is
/// read a chunk at a time, so a request never holds a whole log in memory.
pub async fn stream_log(
    source: LogSource,
    opts: LogOptions,
    tx: mpsc::Sender<Bytes>,
) -> io::Result<()> {
    let mut budget = opts.limit_bytes.unwrap_or(u64::MAX);
    let files = LogFiles::open(&source.path).await?;
    let mut file_len = files.current_len;
    // Where in the sequence the lines sent so far end.
    let done = match opts.tail_lines {
        Some(n) => {
            let (data, end) = read_tail(&files, n).await?;
            let mut queue: VecDeque<Vec<u8>> = tail(render_lines(&data, &opts), Some(n)).into();
            if !send_lines(&tx, &mut queue, &mut budget).await {
                return Ok(());
            }
            end
        }
        None => {
            let total = files.len();
            let mut pos = 0;
            let mut carry: Vec<u8> = Vec::new();
            let mut done = 0;
            while pos < total {
                let next = (pos + READ_CHUNK).min(total);
                carry.extend_from_slice(&files.read(pos, next).await?);
                pos = next;
                // Whole lines only; `P` fragments wait for their line unless
                // this is the end, or they pile up past a chunk.
                let cut = if pos >= total || carry.len() as u64 > 2 * READ_CHUNK {
                    carry.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
                } else {
                    last_full_line_end(&carry)
                };
                let mut queue: VecDeque<Vec<u8>> = render_lines(&carry[..cut], &opts).into();
                if !send_lines(&tx, &mut queue, &mut budget).await {
                    return Ok(());
                }
                carry.drain(..cut);
                done = pos - carry.len() as u64;
            }
            done
        }
    };
    // Offsets below refer to the current file only; the rotated part is done.
    let mut offset = done.saturating_sub(files.rotated_len);
    let (true, Some(mut progress)) = (opts.follow, source.progress) else {
        return Ok(());
    };
    loop {
        let closed = progress.changed().await.is_err();
        let len = tokio::fs::metadata(&source.path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if len < file_len || len < offset {
            // Rotated: start again at the top of the new file.
            offset = 0;
        }
        file_len = len;
        if len > offset {
            let bytes = read_from(&source.path, offset).await?;
            let consumed = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            offset += consumed as u64;
            let mut lines: VecDeque<Vec<u8>> = render_lines(&bytes[..consumed], &opts).into();
            if !send_lines(&tx, &mut lines, &mut budget).await {
                return Ok(());
            }
        }
        if closed {
            return Ok(());
        }
    }
}

async fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(io::SeekFrom::Start(offset)).await?;
    let mut out = Vec::new();
    file.read_to_end(&mut out).await?;
    Ok(out)
}

/// Sends lines within the byte budget; `false` when the stream should end.
async fn send_lines(
    tx: &mpsc::Sender<Bytes>,
    lines: &mut VecDeque<Vec<u8>>,
    budget: &mut u64,
) -> bool {
    while let Some(mut line) = lines.pop_front() {
        if *budget == 0 {
            return false;
        }
        if line.len() as u64 > *budget {
            line.truncate(usize::try_from(*budget).unwrap_or(usize::MAX));
        }
        *budget -= line.len() as u64;
        if tx.send(Bytes::from(line)).await.is_err() {
            return false;
        }
    }
    *budget > 0
}

/// Shared handle to the registry.
pub type SharedLogRegistry = Arc<LogRegistry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_written_in_pieces_of_whole_lines() {
        let encoded = b"aaaa\nbb\ncccccccc\nd\n";
        assert_eq!(piece_len(encoded, 100), encoded.len());
        // Whole lines up to the size…
        assert_eq!(piece_len(encoded, 8), 8);
        // …a line longer than it on its own…
        assert_eq!(piece_len(&encoded[8..], 4), 9);
        // …and an unfinished tail as a whole.
        assert_eq!(piece_len(b"abcdef", 2), 6);
        let mut rest: &[u8] = encoded;
        let mut pieces = Vec::new();
        while !rest.is_empty() {
            let (p, next) = rest.split_at(piece_len(rest, 6));
            pieces.push(p);
            rest = next;
        }
        assert_eq!(pieces, [&b"aaaa\n"[..], b"bb\n", b"cccccccc\n", b"d\n"]);
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn partial_writes_are_joined_into_one_line() {
        let mut buf = Vec::new();
        let t = at("2026-01-01T00:00:00Z");
        for (kind, text) in [
            (StreamKind::Stdout, "hel"),
            (StreamKind::Stdout, "lo\nwor"),
            (StreamKind::Stderr, "oops\n"),
            (StreamKind::Stdout, "ld\n"),
        ] {
            encode_chunk(
                &Chunk {
                    kind,
                    at: t,
                    bytes: Bytes::from(text),
                },
                &mut buf,
            );
        }
        let lines = render_lines(&buf, &LogOptions::default());
        let text: Vec<String> = lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        // stdout's "wor" fragment is followed by stderr's full line; CRI
        // readers join a fragment with the next line of the file.
        assert_eq!(text, vec!["hello\n", "woroops\n", "ld\n"]);
    }

    #[test]
    fn timestamps_tail_and_since() {
        let mut buf = Vec::new();
        for (i, ts) in [
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:02Z",
            "2026-01-01T00:00:03Z",
        ]
        .iter()
        .enumerate()
        {
            encode_chunk(
                &Chunk {
                    kind: StreamKind::Stdout,
                    at: at(ts),
                    bytes: Bytes::from(format!("line{i}\n")),
                },
                &mut buf,
            );
        }
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        let lines = tail(render_lines(&buf, &opts), Some(1));
        assert_eq!(
            String::from_utf8_lossy(&lines[0]),
            "2026-01-01T00:00:03.000000000Z line2\n"
        );
        let opts = LogOptions {
            since: Some(at("2026-01-01T00:00:02Z")),
            ..Default::default()
        };
        assert_eq!(render_lines(&buf, &opts).len(), 2);
    }

    #[tokio::test]
    async fn follow_ends_when_the_writer_finishes() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("c").join("0.log");
        let log = ContainerLog::create(&path, DEFAULT_MAX_LOG_BYTES).await?;
        let handle = log.handle();
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(stream_log(
            LogSource {
                path: handle.path.clone(),
                progress: Some(handle.progress.clone()),
            },
            LogOptions {
                follow: true,
                ..Default::default()
            },
            tx,
        ));
        let mut out = Box::into_pin(log.stdout().async_stream());
        out.write_all(b"first\n").await?;
        let first = rx.recv().await;
        assert_eq!(first.as_deref(), Some(&b"first\n"[..]));
        out.write_all(b"second\n").await?;
        drop(out);
        log.finish().await?;
        let mut rest = Vec::new();
        while let Some(b) = rx.recv().await {
            rest.extend_from_slice(&b);
        }
        assert_eq!(rest, b"second\n");
        reader.await??;
        Ok(())
    }

    #[tokio::test]
    async fn a_full_log_is_rotated_not_grown() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("0.log");
        let log = ContainerLog::create(&path, 1024).await?;
        let mut out = Box::into_pin(log.stdout().async_stream());
        for i in 0..200 {
            out.write_all(format!("line {i}\n").as_bytes()).await?;
        }
        drop(out);
        log.finish().await?;
        assert!(tokio::fs::metadata(&path).await?.len() <= 1024);
        let lines = render_lines(&read_all(&path).await?, &LogOptions::default());
        // Old lines are gone, the newest are kept in order.
        assert!(lines.len() < 200);
        assert_eq!(lines.last().map(|l| l.as_slice()), Some(&b"line 199\n"[..]));
        Ok(())
    }

    async fn collect(path: &Path, opts: LogOptions) -> anyhow::Result<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = tokio::spawn(stream_log(
            LogSource {
                path: path.to_path_buf(),
                progress: None,
            },
            opts,
            tx,
        ));
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        reader.await??;
        Ok(got)
    }

    /// A log file of `n` lines `line <i>`, the first half rotated, with a
    /// line split into `P` fragments across the chunk size.
    async fn big_log(dir: &Path, n: usize) -> anyhow::Result<PathBuf> {
        let path = dir.join("0.log");
        let line = |i: usize| format!("2026-01-01T00:00:00.000000000Z stdout F line {i}\n");
        let rotated: String = (0..n / 2).map(line).collect();
        let mut current: String = (n / 2..n - 1).map(line).collect();
        let long = "x".repeat(READ_CHUNK as usize);
        current.push_str(&format!("2026-01-01T00:00:00.000000000Z stdout P {long}\n"));
        current.push_str(&format!(
            "2026-01-01T00:00:00.000000000Z stdout F line {}\n",
            n - 1
        ));
        tokio::fs::write(dir.join("0.log.1"), rotated).await?;
        tokio::fs::write(&path, current).await?;
        Ok(path)
    }

    #[tokio::test]
    async fn tail_and_limit_read_only_what_they_need_and_match_a_full_read() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = big_log(dir.path(), 20_000).await?;
        let everything: Vec<u8> =
            render_lines(&read_all(&path).await?, &LogOptions::default()).concat();
        assert_eq!(collect(&path, LogOptions::default()).await?, everything);
        for n in [0u64, 1, 2, 3, 10_000, 19_999, 20_000, 50_000] {
            let want: Vec<u8> = tail(
                render_lines(&read_all(&path).await?, &LogOptions::default()),
                Some(n),
            )
            .concat();
            let got = collect(
                &path,
                LogOptions {
                    tail_lines: Some(n),
                    ..Default::default()
                },
            )
            .await?;
            assert_eq!(got, want, "tailLines={n}");
        }
        let got = collect(
            &path,
            LogOptions {
                limit_bytes: Some(100),
                ..Default::default()
            },
        )
        .await?;
        assert_eq!(got, everything[..100]);
        // A tail reads from the end: its window is about the tail, not the file.
        let files = LogFiles::open(&path).await?;
        let (window, end) = read_tail(&files, 2).await?;
        assert!(window.len() < 3 * READ_CHUNK as usize, "{}", window.len());
        assert_eq!(end, files.len());
        Ok(())
    }

    #[tokio::test]
    async fn limit_bytes_truncates() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("0.log");
        let log = ContainerLog::create(&path, DEFAULT_MAX_LOG_BYTES).await?;
        let mut out = Box::into_pin(log.stdout().async_stream());
        out.write_all(b"abcdef\nghij\n").await?;
        drop(out);
        log.finish().await?;
        let (tx, mut rx) = mpsc::channel(16);
        stream_log(
            LogSource {
                path,
                progress: None,
            },
            LogOptions {
                limit_bytes: Some(9),
                ..Default::default()
            },
            tx,
        )
        .await?;
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"abcdef\ngh");
        Ok(())
    }
}

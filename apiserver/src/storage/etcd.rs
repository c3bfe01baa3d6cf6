//! The etcd backend: [`Store`] on a real etcd cluster through its v3 API.
//!
//! Every store lives under a key prefix (`/wasmkube` by default), so several
//! stores — tests, or clusters — can share one etcd: the store key
//! `/registry/pods/ns/p` is the etcd key `/wasmkube/registry/pods/ns/p`.
//! Store keys and range/watch prefixes start with `/`, which keeps sibling
//! prefixes (`/a` and `/a2`) from ever seeing each other's keys.
//!
//! Revisions are etcd's own: one counter for the whole etcd cluster, shared by
//! every prefix. Each write is one etcd transaction whose compare is the
//! store's precondition, so a failed precondition writes nothing and does not
//! bump the revision. The store never writes keys of its own (not even for
//! compaction bookkeeping): that would bump the global revision behind the
//! caller's back. The compacted revision is therefore read back from etcd
//! itself (a range at an old revision fails exactly when it is compacted), and
//! remembered as a lower bound.
//!
//! Watches resume by themselves when the etcd member serving them goes away
//! (or loses its leader): the stream re-creates the etcd watch from the
//! revision after the last event it delivered, on any member still answering,
//! so consumers see no gap and no duplicate. Only compaction, a retry window
//! without any member, or a malformed event ends a stream with an error.
//!
//! etcd limits the size of a request (`--max-request-bytes`, 1.5 MiB by
//! default); values close to that size need the server started with a larger
//! limit (the apiserver accepts 3 MiB bodies).

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, KvClient,
    TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
};

use super::{Error, KeyValue, Precondition, RangeResult, Result, Store, WatchEvent, WatchStream};

/// Largest gRPC message accepted from etcd: a range or a watch response can
/// hold many objects, and etcd does not cap what it sends (Kubernetes uses
/// the same limit).
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Client TLS for etcd (`https://` endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// PEM CA bundle that signed the etcd server certificates.
    pub ca_file: PathBuf,
    /// PEM client certificate, when etcd requires client authentication
    /// (`--client-cert-auth`); set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs of the etcd members (`http://host:2379`, or `https://`
    /// with [`EtcdOptions::tls`]). Requests are balanced over the members
    /// that answer.
    pub endpoints: Vec<String>,
    /// Prefix of every etcd key of this store (a trailing `/` is ignored;
    /// empty means the whole keyspace).
    pub prefix: String,
    /// Client TLS; `None` for plain `http://` endpoints.
    pub tls: Option<EtcdTls>,
    /// How long connecting (and the first round trip) may take.
    pub dial_timeout: Duration,
    /// How long one request may take before it fails with
    /// [`Error::Backend`]; also how long a watch keeps trying to resume
    /// before giving up. A write that timed out may still have committed.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/wasmkube".to_owned(),
            tls: None,
            dial_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The etcd-backed [`Store`]. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct EtcdStore {
    /// Holds the endpoint list of the balanced channel the clients below use.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// The key prefix without its trailing `/`.
    root: Arc<str>,
    endpoints: Arc<[String]>,
    request_timeout: Duration,
    /// The highest compacted revision seen or made (etcd only ever raises it).
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.root)
            .finish_non_exhaustive()
    }
}

/// Whether a request may run twice: a read always may; a write only when
/// the first attempt surely never reached etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// Whether a failed request is worth another attempt on another member.
fn retryable(e: &etcd_client::Error, op: Op) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        // Errors the client raised itself before sending anything.
        return matches!(e, etcd_client::Error::TransportError(_));
    };
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    // Never sent: no connection to that member, or the member refused it
    // up front because it has no leader (it proposes nothing then).
    let not_sent = status.message().contains("connect error")
        || status.message().contains("no leader")
        || format!("{status:?}").contains("ConnectError");
    not_sent || op == Op::Read
}

/// How etcd answered a read at an explicit revision.
enum Probe {
    Served,
    Compacted,
    Future,
}

/// The smallest key after every key starting with `prefix` (etcd's
/// `range_end` for a prefix); `\0` means "to the end of the keyspace".
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

fn is_future(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision is a future revision"))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Error::Backend("etcd response without a header".into()))
}

fn check_key(key: &str) -> Result<()> {
    if key.starts_with('/') {
        Ok(())
    } else {
        Err(Error::Backend(format!(
            "etcd store keys must start with '/': {key:?}"
        )))
    }
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (a linearizable read
    /// within `dial_timeout`). Unreachable endpoints, bad TLS files or an
    /// etcd without quorum fail with [`Error::Backend`].
    pub async fn connect(options: EtcdOptions) -> Result<EtcdStore> {
        if options.endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoints given".into()));
        }
        let endpoints_text = options.endpoints.join(",");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.dial_timeout)
            // Detects a member that vanished without closing the connection,
            // so its watches resume elsewhere.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member cut off from its cluster refuses requests and cancels
            // watches instead of serving stale data or hanging.
            .with_require_leader(true);
        if let Some(tls) = &options.tls {
            connect = connect.with_tls(load_tls(tls).await?);
        }
        let dial = Client::connect(options.endpoints.clone(), Some(connect));
        let client = match tokio::time::timeout(options.dial_timeout, dial).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(Error::Backend(format!(
                    "cannot connect to etcd at {endpoints_text}: {e}"
                )));
            }
            Err(_) => {
                return Err(Error::Backend(format!(
                    "cannot connect to etcd at {endpoints_text}: no answer within {:?}",
                    options.dial_timeout
                )));
            }
        };
        let store = EtcdStore {
            _client: client.clone(),
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            root: options.prefix.trim_end_matches('/').into(),
            endpoints: options.endpoints.into(),
            request_timeout: options.request_timeout,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        // The client connects lazily: one read within the dial timeout
        // tells a working etcd from an unreachable one, with the cause.
        let dialing = EtcdStore {
            request_timeout: options.dial_timeout,
            ..store.clone()
        };
        match dialing.current_revision().await {
            Ok(_) => Ok(store),
            Err(Error::Backend(cause)) => {
                Err(Error::Backend(format!("cannot reach etcd: {cause}")))
            }
            Err(e) => Err(e),
        }
    }

    /// The key prefix of this store (without a trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.root
    }

    fn full_key(&self, key: &str) -> Result<Vec<u8>> {
        check_key(key)?;
        Ok(format!("{}{key}", self.root).into_bytes())
    }

    /// The etcd key range `[start, end)` of a store prefix (`""` = all keys).
    fn full_range(&self, prefix: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let prefix = if prefix.is_empty() { "/" } else { prefix };
        let start = self.full_key(prefix)?;
        let end = prefix_end(&start);
        Ok((start, end))
    }

    /// Turns an etcd key-value of this store into a store key-value.
    fn decode(&self, kv: etcd_client::KeyValue) -> Result<KeyValue> {
        let create_revision = kv.create_revision();
        let mod_revision = kv.mod_revision();
        let (key, value) = kv.into_key_value();
        let key = String::from_utf8(key)
            .map_err(|e| Error::Backend(format!("etcd key is not UTF-8: {e}")))?;
        let Some(key) = key.strip_prefix(&*self.root) else {
            return Err(Error::Backend(format!(
                "etcd returned {key:?} outside the store prefix {:?}",
                self.root
            )));
        };
        Ok(KeyValue {
            key: key.to_owned(),
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
    }

    /// Runs one etcd request within the request timeout, mapping failures
    /// to [`Error::Backend`] naming the operation and the endpoints.
    async fn call<T, F, Fut>(&self, what: &'static str, op: Op, request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_raw(what, op, request)
            .await?
            .map_err(|e| self.failure(what, &e))
    }

    /// Like [`EtcdStore::call`], but hands etcd's own error back so callers
    /// can tell compaction and future revisions apart.
    ///
    /// The client balances requests over all endpoints and keeps trying a
    /// dead member, so a request can fail without ever reaching etcd; that
    /// one is retried (another member usually answers), within the timeout.
    async fn call_raw<T, F, Fut>(
        &self,
        what: &'static str,
        op: Op,
        mut request: F,
    ) -> Result<Result<T, etcd_client::Error>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = std::time::Instant::now();
        let _timed = crate::metrics::EtcdTimer::new(what, started);
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let mut backoff = Duration::from_millis(20);
        loop {
            let attempt = tokio::time::timeout_at(deadline, request()).await;
            match attempt {
                Err(_) => {
                    return Err(Error::Backend(format!(
                        "etcd {what} at {}: no answer within {:?}",
                        self.endpoints.join(","),
                        self.request_timeout
                    )));
                }
                Ok(Err(e))
                    if retryable(&e, op) && tokio::time::Instant::now() + backoff < deadline =>
                {
                    tracing::debug!(error = %e, what, "retrying etcd request");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    fn failure(&self, what: &str, e: &etcd_client::Error) -> Error {
        Error::Backend(format!("etcd {what} at {}: {e}", self.endpoints.join(",")))
    }

    async fn txn(&self, what: &'static str, txn: Txn) -> Result<TxnResponse> {
        self.call(what, Op::Write, || {
            let mut kv = self.kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// A read of `options` over `key`, retried like any read.
    async fn read(
        &self,
        what: &'static str,
        key: Vec<u8>,
        options: Option<GetOptions>,
    ) -> Result<Result<etcd_client::GetResponse, etcd_client::Error>> {
        self.call_raw(what, Op::Read, || {
            let mut kv = self.kv.clone();
            let key = key.clone();
            let options = options.clone();
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// Reads (nothing) at `revision` to learn whether etcd still serves it.
    async fn probe(&self, revision: i64) -> Result<Probe> {
        let key = self.root.as_bytes().to_vec();
        let options = GetOptions::new().with_count_only().with_revision(revision);
        match self.read("probe", key, Some(options)).await? {
            Ok(_) => Ok(Probe::Served),
            Err(e) if is_compacted(&e) => Ok(Probe::Compacted),
            Err(e) if is_future(&e) => Ok(Probe::Future),
            Err(e) => Err(self.failure("probe", &e)),
        }
    }

    /// Finds etcd's compacted revision: the smallest revision it still
    /// serves, between what we already know and the current revision.
    async fn discover_compacted(&self) -> Result<i64> {
        let known = self.compacted.load(Ordering::SeqCst);
        // A read at `known` (or at 1) answers the common case in one round
        // trip: served means nobody compacted past what we know.
        match self.probe(known.max(1)).await? {
            Probe::Served => return Ok(known),
            Probe::Future => {
                return Err(Error::Backend(format!(
                    "etcd revision is below the compacted revision {known} this store saw: was etcd reset?"
                )));
            }
            Probe::Compacted => {}
        }
        // Someone else compacted further: binary search (lo, hi], where
        // revision `lo` is compacted away and `hi` (the current one) is served.
        let mut lo = known.max(1);
        let mut hi = self.current_revision().await?;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.probe(mid).await? {
                Probe::Served => hi = mid,
                Probe::Compacted => lo = mid,
                Probe::Future => hi = mid,
            }
        }
        self.compacted.fetch_max(hi, Ordering::SeqCst);
        Ok(hi)
    }

    /// A precondition as etcd compares (empty for `None`).
    fn compares(&self, key: &[u8], precondition: Precondition) -> Vec<Compare> {
        match precondition {
            Precondition::None => Vec::new(),
            Precondition::MustNotExist | Precondition::ModRevision(0) => {
                vec![Compare::create_revision(key, CompareOp::Equal, 0)]
            }
            Precondition::MustExist => vec![Compare::create_revision(key, CompareOp::Greater, 0)],
            Precondition::ModRevision(revision) => {
                vec![Compare::mod_revision(key, CompareOp::Equal, revision)]
            }
        }
    }

    /// The error for a failed compare, from the key's state the failure
    /// branch read (in the same transaction, so at the same revision).
    fn precondition_failed(
        &self,
        key: &str,
        precondition: Precondition,
        response: &TxnResponse,
    ) -> Error {
        let current = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
                _ => None,
            })
            .flatten();
        match (precondition, current) {
            (Precondition::MustNotExist | Precondition::ModRevision(0), Some(_)) => {
                Error::AlreadyExists {
                    key: key.to_owned(),
                }
            }
            (Precondition::MustExist | Precondition::ModRevision(_), None) => Error::NotFound {
                key: key.to_owned(),
            },
            (Precondition::ModRevision(expected), Some(actual)) if actual != expected => {
                Error::Conflict {
                    key: key.to_owned(),
                    expected,
                    actual,
                }
            }
            // The compare failed but the state read back satisfies it: the
            // transaction answer is inconsistent.
            (_, state) => Error::Backend(format!(
                "etcd rejected {precondition:?} on {key} (mod revision {state:?})"
            )),
        }
    }
}

async fn load_tls(tls: &EtcdTls) -> Result<TlsOptions> {
    let read = |path: PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| Error::Backend(format!("reading etcd TLS file {}: {e}", path.display())))
    };
    let mut options =
        TlsOptions::new().ca_certificate(Certificate::from_pem(read(tls.ca_file.clone()).await?));
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let identity = Identity::from_pem(read(cert.clone()).await?, read(key.clone()).await?);
            options = options.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(Error::Backend(
                "etcd TLS: a client certificate needs its key and a key its certificate".into(),
            ));
        }
    }
    Ok(options)
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let full = self.full_key(key)?;
        let mut response = self
            .read("get", full, None)
            .await?
            .map_err(|e| self.failure("get", &e))?;
        match response.take_kvs().into_iter().next() {
            Some(found) => Ok(Some(self.decode(found)?)),
            None => Ok(None),
        }
    }

    async fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<RangeResult> {
        let (mut start, end) = self.full_range(prefix)?;
        if let Some(after) = start_after {
            // The smallest key greater than `after` is `after` + NUL. Only a
            // lower bound within the prefix's range, so any string will do.
            let mut next = format!("{}{after}", self.root).into_bytes();
            next.push(0);
            if next > start {
                start = next;
            }
        }
        if start >= end {
            return Ok(RangeResult {
                kvs: Vec::new(),
                revision: self.current_revision().await?,
                more: false,
            });
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let options = GetOptions::new().with_range(end).with_limit(limit);
        let mut response = self
            .read("range", start, Some(options))
            .await?
            .map_err(|e| self.failure("range", &e))?;
        let revision = header_revision(response.header())?;
        let more = response.more();
        let kvs = response
            .take_kvs()
            .into_iter()
            .map(|kv| self.decode(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(RangeResult {
            kvs,
            revision,
            more,
        })
    }

    async fn put(&self, key: &str, value: Bytes, precondition: Precondition) -> Result<KeyValue> {
        let full = self.full_key(key)?;
        // Reading the key back (without its value) in the same transaction
        // gives its create revision without shipping the old value. A
        // create needs no read-back: the key did not exist, so it is
        // created at the write's own revision.
        let creates = matches!(precondition, Precondition::MustNotExist);
        let read_back = TxnOp::get(full.clone(), Some(GetOptions::new().with_keys_only()));
        let mut success = vec![TxnOp::put(full.clone(), value.to_vec(), None)];
        if !creates {
            success.push(read_back.clone());
        }
        let txn = Txn::new()
            .when(self.compares(&full, precondition))
            .and_then(success)
            .or_else(vec![read_back]);
        let response = self.txn("put", txn).await?;
        if !response.succeeded() {
            return Err(self.precondition_failed(key, precondition, &response));
        }
        let revision = header_revision(response.header())?;
        if creates {
            return Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision: revision,
                mod_revision: revision,
            });
        }
        let written = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().cloned(),
            _ => None,
        });
        match written {
            Some(kv) if kv.mod_revision() == revision => Ok(KeyValue {
                key: key.to_owned(),
                value,
                create_revision: kv.create_revision(),
                mod_revision: revision,
            }),
            _ => Err(Error::Backend(format!(
                "etcd put of {key} at revision {revision} did not read back the write"
            ))),
        }
    }

    async fn delete(&self, key: &str, precondition: Precondition) -> Result<(KeyValue, i64)> {
        let full = self.full_key(key)?;
        let precondition = match precondition {
            // A delete that requires the key to be absent can never succeed;
            // answer like the embedded store without writing.
            Precondition::MustNotExist | Precondition::ModRevision(0) => {
                return Err(match self.get(key).await? {
                    Some(_) => Error::AlreadyExists {
                        key: key.to_owned(),
                    },
                    None => Error::NotFound {
                        key: key.to_owned(),
                    },
                });
            }
            // Deleting a missing key is NotFound, so "any state" means "exists".
            Precondition::None => Precondition::MustExist,
            other => other,
        };
        let txn = Txn::new()
            .when(self.compares(&full, precondition))
            .and_then(vec![TxnOp::delete(
                full.clone(),
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )])
            .or_else(vec![TxnOp::get(
                full,
                Some(GetOptions::new().with_keys_only()),
            )]);
        let response = self.txn("delete", txn).await?;
        if !response.succeeded() {
            return Err(self.precondition_failed(key, precondition, &response));
        }
        let revision = header_revision(response.header())?;
        let prev = response.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().into_iter().next(),
            _ => None,
        });
        match prev {
            Some(prev) => Ok((self.decode(prev)?, revision)),
            None => Err(Error::Backend(format!(
                "etcd delete of {key} at revision {revision} returned no previous value"
            ))),
        }
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let (start_key, end_key) = self.full_range(prefix)?;
        let current = self.current_revision().await?;
        if after_revision > current {
            return Err(Error::FutureRevision {
                requested: after_revision,
                current,
            });
        }
        let after = if after_revision <= 0 {
            current
        } else {
            after_revision
        };
        // etcd would accept the watch and cancel it a moment later; checking
        // first lets the caller get `Compacted` from this call, like the
        // embedded store. (A compaction racing this check still arrives, as
        // an error on the stream.)
        if after < current
            && let Probe::Compacted = self.probe(after + 1).await?
        {
            return Err(Error::Compacted {
                requested: after_revision,
                compacted: self.discover_compacted().await?,
            });
        }
        let mut watcher = Watcher {
            client: self.watch.clone(),
            store: self.clone(),
            start_key,
            end_key,
            last: after,
            stream: None,
            pending: VecDeque::new(),
            done: false,
            broken_since: None,
            opened_at: tokio::time::Instant::now(),
        };
        watcher.stream = Some(watcher.open().await?);
        Ok(Box::pin(futures::stream::unfold(watcher, |mut w| async {
            let item = w.next().await?;
            Some((item, w))
        })))
    }

    async fn current_revision(&self) -> Result<i64> {
        let key = self.root.as_bytes().to_vec();
        let options = GetOptions::new().with_count_only();
        let response = self
            .read("read", key, Some(options))
            .await?
            .map_err(|e| self.failure("read", &e))?;
        header_revision(response.header())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        if revision <= self.compacted.load(Ordering::SeqCst) {
            return Ok(());
        }
        let current = self.current_revision().await?;
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compact = || {
            let mut kv = self.kv.clone();
            async move { kv.compact(revision, None).await }
        };
        match self.call_raw("compact", Op::Write, compact).await? {
            Ok(_) => {}
            // Someone compacted at or past `revision` already: a no-op.
            Err(e) if is_compacted(&e) => {}
            Err(e) if is_future(&e) => {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await?,
                });
            }
            Err(e) => return Err(self.failure("compact", &e)),
        }
        self.compacted.fetch_max(revision, Ordering::SeqCst);
        Ok(())
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.discover_compacted().await
    }
}

/// One store watch: the etcd watch it currently reads, and what it needs to
/// re-create that watch on another member without a gap.
struct Watcher {
    client: WatchClient,
    store: EtcdStore,
    start_key: Vec<u8>,
    end_key: Vec<u8>,
    /// The revision of the last event delivered (or the start point).
    last: i64,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Result<WatchEvent>>,
    done: bool,
    /// When the watch last broke with no etcd response since: resuming
    /// gives up `request_timeout` after that, even if each re-created watch
    /// is accepted and then dropped again.
    broken_since: Option<tokio::time::Instant>,
    /// When the current etcd watch was created.
    opened_at: tokio::time::Instant,
}

/// What one etcd watch response means for the stream.
enum Outcome {
    Events,
    /// The etcd watch is gone for a reason worth retrying elsewhere.
    Resume(String),
}

impl Watcher {
    /// Creates the etcd watch from `last + 1` and waits for etcd to confirm it.
    async fn open(&mut self) -> Result<etcd_client::WatchStream> {
        let options = WatchOptions::new()
            .with_range(self.end_key.clone())
            .with_start_revision(self.last + 1)
            .with_prev_key();
        let store = self.store.clone();
        let create = || {
            let mut client = self.client.clone();
            let key = self.start_key.clone();
            let options = options.clone();
            async move { client.watch(key, Some(options)).await }
        };
        let mut stream = store.call("watch", Op::Read, create).await?;
        let created = tokio::time::timeout(store.request_timeout, stream.message())
            .await
            .map_err(|_| Error::Backend("etcd did not confirm the watch in time".into()))?
            .map_err(|e| store.failure("watch", &e))?;
        match created {
            Some(response) if response.created() && !response.canceled() => Ok(stream),
            Some(response) if response.compact_revision() != 0 => Err(Error::Compacted {
                requested: self.last,
                compacted: response.compact_revision(),
            }),
            Some(response) => Err(Error::Backend(format!(
                "etcd refused the watch: {}",
                response.cancel_reason()
            ))),
            None => Err(Error::Backend(
                "etcd closed the watch before confirming it".into(),
            )),
        }
    }

    /// Re-creates the etcd watch, retrying with backoff for up to the
    /// request timeout (a new leader or another member usually answers
    /// within an election timeout).
    async fn resume(&mut self, why: &str) -> Result<()> {
        tracing::debug!(reason = why, after = self.last, "resuming etcd watch");
        let now = tokio::time::Instant::now();
        let broke_again = self.broken_since.is_some();
        let deadline = *self.broken_since.get_or_insert(now) + self.store.request_timeout;
        let mut backoff = Duration::from_millis(50);
        if broke_again {
            // The last re-created watch broke before etcd sent anything:
            // do not hammer a flapping member.
            tokio::time::sleep(backoff).await;
        }
        loop {
            match self.open().await {
                Ok(stream) => {
                    self.stream = Some(stream);
                    self.opened_at = tokio::time::Instant::now();
                    return Ok(());
                }
                Err(e @ Error::Compacted { .. }) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(Error::Backend(format!(
                            "etcd watch lost ({why}) and could not be resumed after revision {}: {e}",
                            self.last
                        )));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let Some(stream) = self.stream.as_mut() else {
                // Only reached after a resume failed, which sets `done`.
                self.done = true;
                continue;
            };
            let outcome = match stream.message().await {
                Ok(Some(response)) => {
                    self.broken_since = None;
                    self.absorb(&response)
                }
                Ok(None) => Outcome::Resume("etcd ended the watch stream".into()),
                Err(e) => Outcome::Resume(e.to_string()),
            };
            if let Outcome::Resume(why) = outcome {
                self.stream = None;
                // A watch that lived a while before breaking is a new
                // failure, not the same one dragging on.
                if self.opened_at.elapsed() > self.store.request_timeout {
                    self.broken_since = None;
                }
                if let Err(e) = self.resume(&why).await {
                    self.pending.push_back(Err(e));
                    self.done = true;
                }
            }
        }
    }

    /// Queues the events of one etcd watch response, in order.
    fn absorb(&mut self, response: &etcd_client::WatchResponse) -> Outcome {
        if response.compact_revision() != 0 {
            self.pending.push_back(Err(Error::Compacted {
                requested: self.last,
                compacted: response.compact_revision(),
            }));
            self.done = true;
            return Outcome::Events;
        }
        if response.canceled() {
            let reason = response.cancel_reason();
            if reason.contains("no leader") {
                return Outcome::Resume(format!("etcd cancelled the watch: {reason}"));
            }
            self.pending.push_back(Err(Error::Backend(format!(
                "etcd cancelled the watch: {reason}"
            ))));
            self.done = true;
            return Outcome::Events;
        }
        for event in response.events() {
            match self.convert(event) {
                // After a resume etcd may repeat nothing, but never deliver twice.
                Ok(Some(event)) if event.revision() > self.last => {
                    self.last = event.revision();
                    self.pending.push_back(Ok(event));
                }
                Ok(_) => {}
                Err(e) => {
                    self.pending.push_back(Err(e));
                    self.done = true;
                    break;
                }
            }
        }
        Outcome::Events
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<Option<WatchEvent>> {
        let decode = |kv: Option<&etcd_client::KeyValue>| -> Result<Option<KeyValue>> {
            kv.cloned().map(|kv| self.store.decode(kv)).transpose()
        };
        let Some(kv) = decode(event.kv())? else {
            return Err(Error::Backend("etcd watch event without a key".into()));
        };
        let prev = decode(event.prev_kv())?;
        // The raw type: `Event::event_type` panics on values it does not know.
        match event.0.r#type {
            0 => Ok(Some(WatchEvent::Put { kv, prev })),
            1 => match prev {
                Some(prev) => Ok(Some(WatchEvent::Delete {
                    prev,
                    revision: kv.mod_revision,
                })),
                None => Err(Error::Backend(format!(
                    "etcd delete event for {} at revision {} without its previous value",
                    kv.key, kv.mod_revision
                ))),
            },
            other => Err(Error::Backend(format!(
                "etcd watch event of unknown type {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn keys_must_be_absolute_so_sibling_prefixes_stay_apart() {
        assert!(check_key("/registry/pods").is_ok());
        assert!(matches!(check_key("2/foo"), Err(Error::Backend(_))));
    }
}

/// A bare etcd key-value client with no API semantics: plain puts, for the
/// benchmark harness's reference figure (raw etcd throughput at the API's
/// concurrency). It lives in the storage layer so that every etcd client of
/// the project is here; the harness points it at an etcd of its own, never
/// at a cluster's store.
#[derive(Clone)]
pub struct RawPuts {
    kv: etcd_client::KvClient,
}

impl RawPuts {
    /// Connects to one etcd endpoint (one gRPC channel, shared by clones).
    pub async fn connect(endpoint: &str) -> Result<RawPuts> {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .map_err(|e| Error::Backend(format!("etcd at {endpoint}: {e}")))?;
        Ok(RawPuts {
            kv: client.kv_client(),
        })
    }

    /// One unconditional put.
    pub async fn put(&self, key: String, value: Vec<u8>) -> Result<()> {
        self.kv
            .clone()
            .put(key, value, None)
            .await
            .map_err(|e| Error::Backend(format!("etcd put: {e}")))?;
        Ok(())
    }

    /// The transaction an API create sends (see [`EtcdStore`]'s `put` with
    /// `MustNotExist`): put the key if it does not exist yet. `false` when
    /// it did.
    pub async fn create(&self, key: String, value: Vec<u8>) -> Result<bool> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key, value, None)]);
        let resp = self
            .kv
            .clone()
            .txn(txn)
            .await
            .map_err(|e| Error::Backend(format!("etcd txn: {e}")))?;
        Ok(resp.succeeded())
    }

    /// Watches every key under `prefix` as the API server's watch cache
    /// does (with previous values), reading its events until the returned
    /// task is aborted; etcd does the work of a watched store.
    pub async fn watch_prefix(
        endpoint: &str,
        prefix: &str,
    ) -> Result<tokio::task::JoinHandle<u64>> {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .map_err(|e| Error::Backend(format!("etcd at {endpoint}: {e}")))?;
        let mut watch = client.watch_client();
        let options = WatchOptions::new().with_prefix().with_prev_key();
        let mut stream = watch
            .watch(prefix, Some(options))
            .await
            .map_err(|e| Error::Backend(format!("etcd watch: {e}")))?;
        Ok(tokio::spawn(async move {
            let _client = client;
            let mut events = 0u64;
            while let Ok(Some(response)) = stream.message().await {
                events += response.events().len() as u64;
            }
            events
        }))
    }

    /// One linearizable get of a single key (the reference for API reads);
    /// the value when the key exists.
    pub async fn get(&self, key: String) -> Result<Option<Vec<u8>>> {
        let resp = self
            .kv
            .clone()
            .get(key, None)
            .await
            .map_err(|e| Error::Backend(format!("etcd get: {e}")))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Every key under `prefix` with its value, in one range read (the
    /// reference for API lists); the number of keys read.
    pub async fn get_prefix(&self, prefix: String) -> Result<usize> {
        let resp = self
            .kv
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| Error::Backend(format!("etcd range: {e}")))?;
        Ok(resp.kvs().len())
    }
}

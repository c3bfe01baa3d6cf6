//! The etcd store against real etcd servers (Debian's `etcd-server`, started
//! here on free loopback ports with temp data dirs): the shared conformance
//! suite unchanged, stores sharing one etcd under different prefixes, the
//! compactor, connection failures, and a 3-member cluster losing a member.
//!
//! A missing `etcd` binary fails these tests (with a pointer to the setup
//! script); it never skips them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmkube_apiserver::storage::embedded::{CompactionOptions, spawn_compactor};
use wasmkube_apiserver::storage::etcd::{EtcdOptions, EtcdStore, EtcdTls};
use wasmkube_apiserver::storage::{
    Error, Precondition, Store, WatchEvent, WatchStream, conformance,
};

/// How long etcd may take to start, elect a leader or deliver an event.
const DEADLINE: Duration = Duration::from_secs(30);

/// The `etcd` binary on PATH. Missing is a failure, never a skip: the
/// README's setup installs it, and CI must not go green without it.
fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    match found {
        Some(path) => path,
        None if std::env::var_os("CI").is_some() => panic!(
            "etcd is not on PATH and CI is set: the etcd store tests cannot run. \
             Install Debian's etcd-server (scripts/setup.sh) in the CI image."
        ),
        None => panic!(
            "etcd is not on PATH: install Debian's etcd-server (`apt-get install etcd-server`, \
             or run scripts/setup.sh) to run the etcd store tests"
        ),
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// One etcd member process; its command line is kept so it can be restarted
/// on the same ports and data dir.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// PEM files of a test PKI: one CA, a server and a client certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn write(dir: &Path) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "etcd-test-ca");
        let ca_pem = ca.self_signed(&ca_key).expect("CA cert").pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(sans).expect("params");
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &issuer).expect("sign");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            "etcd",
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            "wasmkube-apiserver",
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Pki {
            ca: write("ca.crt", &ca_pem),
            server_cert: write("server.crt", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.crt", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }

    fn client_tls(&self) -> EtcdTls {
        EtcdTls {
            ca_file: self.ca.clone(),
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
        }
    }
}

/// etcd members on loopback, killed on drop.
struct EtcdCluster {
    dir: tempfile::TempDir,
    initial_cluster: String,
    members: Vec<Member>,
    /// Set when clients must use TLS with a client certificate.
    pki: Option<Pki>,
}

impl EtcdCluster {
    /// Starts `size` plain-HTTP members and waits until each answers a
    /// linearizable read.
    async fn start(size: usize) -> EtcdCluster {
        Self::start_with(size, false).await
    }

    /// Like [`EtcdCluster::start`]; with `tls`, clients must connect over
    /// HTTPS with a certificate from the cluster's test CA.
    async fn start_with(size: usize, tls: bool) -> EtcdCluster {
        // A port picked free can be taken before etcd binds it: try again
        // with new ports rather than fail on a race with another test.
        let mut last_error = String::new();
        for _ in 0..3 {
            let members: Vec<Member> = (0..size)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    child: None,
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|m| format!("{}={}", m.name, url(m.peer_port)))
                .collect::<Vec<_>>()
                .join(",");
            let dir = tempfile::tempdir().expect("tempdir");
            let pki = tls.then(|| Pki::write(dir.path()));
            let mut cluster = EtcdCluster {
                dir,
                initial_cluster,
                members,
                pki,
            };
            for i in 0..size {
                cluster.spawn(i);
            }
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("etcd did not start: {last_error}");
    }

    fn spawn(&mut self, i: usize) {
        let binary = etcd_binary();
        let member = &self.members[i];
        let data_dir = self.dir.path().join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("etcd log file");
        let mut command = Command::new(binary);
        if let Some(pki) = &self.pki {
            command
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key)
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--client-cert-auth");
        }
        let client_url = self.client_url(i);
        let child = command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(url(member.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(url(member.peer_port))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(self.dir.path().to_string_lossy().as_ref())
            // The conformance suite stores 1.5 MiB values; etcd's default
            // request limit is exactly 1.5 MiB including the key.
            .arg("--max-request-bytes")
            .arg("10485760")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls every running member until it serves a linearizable read.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            loop {
                if let Some(status) = self.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(format!(
                        "member {} exited with {status}:\n{}",
                        self.members[i].name,
                        self.log_tail(i)
                    ));
                }
                let attempt = EtcdStore::connect(self.options(
                    vec![self.client_url(i)],
                    "/ready",
                    Duration::from_secs(1),
                ))
                .await;
                match attempt {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!(
                            "member {} not ready within {DEADLINE:?}: {e}\n{}",
                            self.members[i].name,
                            self.log_tail(i)
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(())
    }

    fn client_url(&self, i: usize) -> String {
        match self.pki {
            Some(_) => format!("https://127.0.0.1:{}", self.members[i].client_port),
            None => url(self.members[i].client_port),
        }
    }

    /// Store options for this cluster (with its client certificate, if TLS).
    fn options(&self, endpoints: Vec<String>, prefix: &str, timeout: Duration) -> EtcdOptions {
        EtcdOptions {
            tls: self.pki.as_ref().map(Pki::client_tls),
            ..options(endpoints, prefix, timeout)
        }
    }

    fn endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|i| self.client_url(i))
            .collect()
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed member on its ports and data dir.
    async fn restart(&mut self, i: usize) {
        self.spawn(i);
        if let Err(e) = self.wait_ready().await {
            panic!("restarting member {i}: {e}");
        }
    }

    /// The index of the current leader, as the members report it.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for i in 0..self.members.len() {
                if self.members[i].child.is_none() {
                    continue;
                }
                let Ok(mut client) = etcd_client::Client::connect([self.client_url(i)], None).await
                else {
                    continue;
                };
                let Ok(status) = client.status().await else {
                    continue;
                };
                let me = status.header().map(|h| h.member_id());
                if status.leader() != 0 && me == Some(status.leader()) {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no etcd leader within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn options(endpoints: Vec<String>, prefix: &str, timeout: Duration) -> EtcdOptions {
    EtcdOptions {
        endpoints,
        prefix: prefix.to_owned(),
        tls: None,
        dial_timeout: timeout,
        request_timeout: timeout,
    }
}

async fn connect(endpoints: Vec<String>, prefix: &str) -> Arc<dyn Store> {
    connect_with(options(endpoints, prefix, Duration::from_secs(10))).await
}

async fn connect_with(options: EtcdOptions) -> Arc<dyn Store> {
    let store = EtcdStore::connect(options).await.expect("connect to etcd");
    Arc::new(store)
}

async fn next_event(stream: &mut WatchStream) -> Result<WatchEvent, Error> {
    tokio::time::timeout(DEADLINE, stream.next())
        .await
        .expect("no watch event within the deadline")
        .expect("watch stream ended")
}

/// The whole suite, unchanged, on one etcd: each property gets a fresh
/// store under its own prefix. The properties run one after another
/// because etcd's revision counter is global to the etcd cluster and the
/// suite counts revisions ("nothing else writing"); every property but
/// the first also runs on an etcd that already holds other prefixes' keys
/// and history, and after the compaction property, a compacted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_against_a_real_etcd() {
    let etcd = EtcdCluster::start(1).await;
    let endpoints = etcd.endpoints();
    let mut n = 0;
    conformance::run_all(|| {
        let name = conformance::ALL[n].0;
        n += 1;
        eprintln!(
            "conformance property {n}/{}: {name}",
            conformance::ALL.len()
        );
        let endpoints = endpoints.clone();
        async move { connect(endpoints, &format!("/conformance/{name}")).await }
    })
    .await;
    assert_eq!(n, conformance::ALL.len(), "one fresh store per property");
}

/// Every etcd request is timed in `etcd_request_duration_seconds`, by
/// operation, as kube-apiserver reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_requests_are_timed_by_operation() {
    let etcd = EtcdCluster::start(1).await;
    let store = connect(etcd.endpoints(), "/metrics-test").await;
    let (puts, _) = wasmkube_apiserver::metrics::etcd_requests("put");
    let (gets, _) = wasmkube_apiserver::metrics::etcd_requests("get");
    for i in 0..3 {
        store
            .put(
                &format!("/k{i}"),
                Bytes::from_static(b"v"),
                Precondition::MustNotExist,
            )
            .await
            .expect("put");
    }
    store.get("/k0").await.expect("get");
    let (puts_after, seconds) = wasmkube_apiserver::metrics::etcd_requests("put");
    // Other tests in this binary may write meanwhile: at least ours count.
    assert!(puts_after >= puts + 3, "puts {puts} → {puts_after}");
    assert!(seconds > 0.0);
    assert!(wasmkube_apiserver::metrics::etcd_requests("get").0 > gets);
    let text = wasmkube_apiserver::metrics::render();
    assert!(
        text.contains("etcd_request_duration_seconds_count{operation=\"put\"}"),
        "{text}"
    );
    assert!(text.contains("# TYPE etcd_request_duration_seconds histogram"));
}

/// Two stores on one etcd under sibling prefixes (`/t/a`, `/t/a2`) never
/// see each other's keys or events, while their revisions are the one
/// etcd counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_under_sibling_prefixes_share_one_etcd_without_mixing() {
    let etcd = EtcdCluster::start(1).await;
    let a = connect(etcd.endpoints(), "/t/a/").await;
    let b = connect(etcd.endpoints(), "/t/a2").await;
    let mut watch_a = a.watch("", 0).await.expect("watch everything in a");
    let in_a = a
        .put(
            "/registry/pods/ns/p",
            Bytes::from_static(b"a"),
            Precondition::MustNotExist,
        )
        .await
        .expect("put a");
    let in_b = b
        .put(
            "/registry/pods/ns/p",
            Bytes::from_static(b"b"),
            Precondition::MustNotExist,
        )
        .await
        .expect("the same key in b is another key");
    assert_eq!(
        in_b.mod_revision,
        in_a.mod_revision + 1,
        "one etcd revision counter"
    );
    assert_eq!(
        a.current_revision().await.expect("revision"),
        in_b.mod_revision
    );
    for (store, value) in [(&a, "a"), (&b, "b")] {
        let all = store.range("", None, 0).await.expect("range everything");
        let keys: Vec<(&str, &[u8])> = all
            .kvs
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.as_ref()))
            .collect();
        assert_eq!(keys, [("/registry/pods/ns/p", value.as_bytes())]);
    }
    let (_, deleted) = b
        .delete("/registry/pods/ns/p", Precondition::None)
        .await
        .expect("delete in b");
    let later = a
        .put(
            "/registry/pods/ns/q",
            Bytes::from_static(b"a"),
            Precondition::None,
        )
        .await
        .expect("put a");
    assert!(later.mod_revision > deleted);
    assert_eq!(
        next_event(&mut watch_a).await.expect("event").revision(),
        in_a.mod_revision
    );
    assert_eq!(
        next_event(&mut watch_a).await.expect("event").revision(),
        later.mod_revision,
        "b's writes and deletes never reach a's watch"
    );
    assert!(
        a.get("/registry/pods/ns/p").await.expect("get").is_some(),
        "b's delete did not touch a's key"
    );
    match a.put("relative", Bytes::new(), Precondition::None).await {
        Err(Error::Backend(msg)) => assert!(msg.contains("must start with '/'"), "{msg}"),
        other => panic!("a key without a leading '/' could alias a sibling prefix: {other:?}"),
    }
}

/// The generic compactor keeps the last N revisions of the etcd cluster;
/// any other client (no shared memory) sees the same compacted revision and
/// gets `Compacted` (410 Expired on the API) below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_compacts_etcd_and_every_client_sees_it() {
    let etcd = EtcdCluster::start(1).await;
    let store = connect(etcd.endpoints(), "/compactor").await;
    for i in 0..30 {
        store
            .put(
                &format!("/registry/events/ns/e{i}"),
                Bytes::from_static(b"e"),
                Precondition::None,
            )
            .await
            .expect("put");
    }
    let current = store.current_revision().await.expect("revision");
    let shutdown = CancellationToken::new();
    let options = CompactionOptions {
        interval: Duration::from_millis(20),
        keep_revisions: 10,
    };
    let task = spawn_compactor(store.clone(), options, shutdown.clone());
    let expected = current - 9;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let compacted = store.compacted_revision().await.expect("compacted");
        if compacted == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compacted revision stuck at {compacted}, want {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("compactor stops on cancel")
        .expect("compactor task");

    let other = connect(etcd.endpoints(), "/elsewhere").await;
    assert_eq!(
        other.compacted_revision().await.expect("compacted"),
        expected,
        "a fresh client reads the compacted revision from etcd"
    );
    match other.watch("/registry/", expected - 2).await {
        Err(Error::Compacted { compacted, .. }) => assert_eq!(compacted, expected),
        Err(e) => panic!("watch below the compacted revision must be Compacted, got {e}"),
        Ok(_) => panic!("watch below the compacted revision must be Compacted, got a stream"),
    }
    let mut w = store
        .watch("/registry/events/", expected - 1)
        .await
        .expect("the kept window stays watchable");
    assert_eq!(
        next_event(&mut w).await.expect("event").revision(),
        expected
    );
    // A second client compacting further is seen by the first one too.
    other.compact(current).await.expect("compact");
    assert_eq!(
        store.compacted_revision().await.expect("compacted"),
        current
    );
}

/// An endpoint nobody listens on is a `Backend` error naming it, within
/// the dial timeout — not a hang, not a panic.
#[tokio::test]
async fn unreachable_etcd_is_a_clear_backend_error() {
    let port = free_port();
    let started = Instant::now();
    let result =
        EtcdStore::connect(options(vec![url(port)], "/nowhere", Duration::from_secs(1))).await;
    match result {
        Err(Error::Backend(msg)) => {
            assert!(
                msg.contains(&format!("127.0.0.1:{port}")),
                "names the endpoint: {msg}"
            )
        }
        other => panic!("connecting to nothing must be a Backend error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up in time"
    );
    let empty = EtcdStore::connect(options(Vec::new(), "/x", Duration::from_secs(1))).await;
    assert!(matches!(empty, Err(Error::Backend(_))));
}

/// Creates keys `k<i>` under `prefix` for each `i` in `range`; every write
/// must eventually succeed. Returns their revisions.
///
/// Like any etcd client during a failover, a write in flight when its member
/// dies fails with an ambiguous transport error: it may or may not have
/// committed. The write is retried, as a client of the API would; an
/// `AlreadyExists` on the retry is checked to be our own earlier write.
async fn write_all(store: &dyn Store, prefix: &str, range: std::ops::Range<usize>) -> Vec<i64> {
    let mut revisions = Vec::new();
    for i in range {
        let key = format!("{prefix}k{i:04}");
        let value = Bytes::from(i.to_string());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let kv = loop {
            match store
                .put(&key, value.clone(), Precondition::MustNotExist)
                .await
            {
                Ok(kv) => break kv,
                Err(Error::AlreadyExists { .. }) => {
                    let kv = store
                        .get(&key)
                        .await
                        .unwrap_or_else(|e| panic!("read back {key}: {e}"))
                        .unwrap_or_else(|| panic!("{key} exists and then does not"));
                    assert_eq!(kv.value, value, "{key} holds our earlier, ambiguous write");
                    break kv;
                }
                Err(Error::Backend(e)) if tokio::time::Instant::now() < deadline => {
                    eprintln!("write {key}: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("write {key} with quorum: {e}"),
            }
        };
        revisions.push(kv.mod_revision);
    }
    revisions
}

/// Reads as many events as `expected` holds and checks their revisions.
async fn assert_watch_delivers(w: &mut WatchStream, expected: &[i64], what: &str) {
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        match next_event(w).await {
            Ok(event) => seen.push(event.revision()),
            Err(e) => panic!("{what}: watch failed after {seen:?}: {e}"),
        }
    }
    assert_eq!(seen, expected, "{what}: every event once, in order");
}

/// A 3-member etcd cluster on loopback: a representative part of the suite
/// through all three endpoints, then the leader is killed: reads, writes and
/// watches keep working with the remaining quorum (a watch served by the
/// dead member resumes on another one without a gap), and a client pinned to
/// the dead member resumes its watch once the member is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_keeps_serving_after_losing_its_leader() {
    let mut etcd = EtcdCluster::start(3).await;
    let endpoints = etcd.endpoints();
    for (name, property) in conformance::ALL {
        if [
            "revisions_are_global_and_monotonic",
            "mod_revision_mismatch_is_a_conflict",
            "range_paging",
            "watch_hands_over_from_replay_to_live_without_gaps",
            "compaction_expires_old_revisions",
            "concurrent_cas_has_exactly_one_winner",
        ]
        .contains(name)
        {
            eprintln!("3-member cluster: {name}");
            property(connect(endpoints.clone(), &format!("/cluster/{name}")).await).await;
        }
    }

    let store = connect(endpoints.clone(), "/failover").await;
    let prefix = "/registry/configmaps/failover/";
    let before = write_all(store.as_ref(), prefix, 0..20).await;
    let leader = etcd.leader().await;
    // Pinned to the member about to die, with a resume window long enough
    // to cover its restart.
    let pinned = EtcdStore::connect(EtcdOptions {
        request_timeout: DEADLINE,
        ..options(
            vec![etcd.client_url(leader)],
            "/failover",
            Duration::from_secs(10),
        )
    })
    .await
    .expect("connect to the leader alone");
    let mut pinned_watch = pinned.watch(prefix, 0).await.expect("pinned watch");
    // Several watches over all endpoints: some are served by the leader.
    let mut watches = Vec::new();
    for _ in 0..6 {
        watches.push(store.watch(prefix, 0).await.expect("watch"));
    }
    let mut replaying = store
        .watch(prefix, before[0])
        .await
        .expect("replaying watch");

    etcd.kill(leader);
    eprintln!("killed the leader, member {leader}");
    // A new leader takes an election timeout or so; then every write must
    // succeed. Until then a write may fail (or time out) — never hang.
    let deadline = Instant::now() + DEADLINE;
    let first = loop {
        match store
            .put(
                &format!("{prefix}k0020"),
                Bytes::from_static(b"20"),
                Precondition::None,
            )
            .await
        {
            Ok(kv) => break kv.mod_revision,
            Err(Error::Backend(msg)) => {
                assert!(
                    Instant::now() < deadline,
                    "no write succeeded after the kill: {msg}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected error while electing a leader: {e}"),
        }
    };
    let mut after = vec![first];
    after.extend(write_all(store.as_ref(), prefix, 21..40).await);

    let listed = store
        .range(prefix, None, 0)
        .await
        .expect("range with quorum");
    let keys: BTreeSet<String> = listed.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys.len(), 40, "every acknowledged write is readable");
    assert_eq!(listed.revision, *after.last().expect("writes"));
    let got = store
        .get(&format!("{prefix}k0039"))
        .await
        .expect("get with quorum")
        .expect("present");
    assert_eq!(got.value, Bytes::from_static(b"39"));
    let cas = store
        .put(
            &got.key,
            Bytes::from_static(b"x"),
            Precondition::ModRevision(got.mod_revision - 1),
        )
        .await;
    assert!(
        matches!(cas, Err(Error::Conflict { .. })),
        "CAS still checked: {cas:?}"
    );

    for (i, w) in watches.iter_mut().enumerate() {
        assert_watch_delivers(w, &after, &format!("watch {i} across the kill")).await;
    }
    let mut everything = before[1..].to_vec();
    everything.extend(&after);
    assert_watch_delivers(&mut replaying, &everything, "replay across the kill").await;
    let mut fresh = store
        .watch(prefix, before[10])
        .await
        .expect("watch after the kill");
    assert_watch_delivers(&mut fresh, &everything[10..], "new watch replaying history").await;

    etcd.restart(leader).await;
    assert_watch_delivers(
        &mut pinned_watch,
        &after,
        "watch pinned to the restarted member",
    )
    .await;
    let more = write_all(store.as_ref(), prefix, 40..45).await;
    assert_watch_delivers(&mut pinned_watch, &more, "pinned watch live again").await;

    // Two members down: no quorum. Requests fail with a Backend error
    // (a 5xx on the API) within the request timeout instead of hanging;
    // with a member back, everything works again and nothing was lost.
    let short = EtcdStore::connect(options(
        endpoints.clone(),
        "/failover",
        Duration::from_secs(3),
    ))
    .await
    .expect("connect");
    let survivor = (leader + 1) % 3;
    for i in 0..3 {
        if i != survivor {
            etcd.kill(i);
        }
    }
    let started = Instant::now();
    let lost = short
        .put(
            &format!("{prefix}lost"),
            Bytes::from_static(b"x"),
            Precondition::MustNotExist,
        )
        .await;
    assert!(
        matches!(lost, Err(Error::Backend(_))),
        "write without quorum: {lost:?}"
    );
    let read = short.get(&format!("{prefix}k0000")).await;
    assert!(
        matches!(read, Err(Error::Backend(_))),
        "linearizable read without quorum: {read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed in bounded time"
    );
    etcd.restart(leader).await;
    let back = write_all(store.as_ref(), prefix, 45..50).await;
    let listed = store
        .range(prefix, None, 0)
        .await
        .expect("range after recovery");
    let acknowledged = listed
        .kvs
        .iter()
        .filter(|kv| !kv.key.ends_with("lost"))
        .count();
    assert_eq!(acknowledged, 50, "every acknowledged write survived");
    assert_eq!(listed.revision, *back.last().expect("writes"));
}

/// etcd with TLS and client certificates (`--client-cert-auth`): the store
/// connects with its CA and client certificate; without a client
/// certificate, over plain HTTP, or with a missing file it fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = EtcdCluster::start_with(1, true).await;
    let endpoints = etcd.endpoints();
    assert!(endpoints[0].starts_with("https://"));
    conformance::create_and_mod_revisions(
        connect_with(etcd.options(endpoints.clone(), "/tls/a", Duration::from_secs(10))).await,
    )
    .await;
    conformance::watch_from_zero_sees_only_new_events(
        connect_with(etcd.options(endpoints.clone(), "/tls/b", Duration::from_secs(10))).await,
    )
    .await;

    let pki = etcd.pki.as_ref().expect("TLS cluster");
    let mut no_client_cert = etcd.options(endpoints.clone(), "/tls", Duration::from_secs(2));
    no_client_cert.tls = Some(EtcdTls {
        cert_file: None,
        key_file: None,
        ..pki.client_tls()
    });
    match EtcdStore::connect(no_client_cert).await {
        Err(Error::Backend(msg)) => assert!(msg.contains("127.0.0.1"), "{msg}"),
        other => panic!("etcd requires a client certificate: {other:?}"),
    }
    let plain = EtcdStore::connect(options(
        vec![endpoints[0].replace("https://", "http://")],
        "/tls",
        Duration::from_secs(2),
    ))
    .await;
    assert!(
        matches!(plain, Err(Error::Backend(_))),
        "plain HTTP to a TLS etcd: {plain:?}"
    );
    let mut missing = etcd.options(endpoints.clone(), "/tls", Duration::from_secs(2));
    missing.tls = Some(EtcdTls {
        ca_file: etcd.dir.path().join("no-such-ca.crt"),
        ..pki.client_tls()
    });
    match EtcdStore::connect(missing).await {
        Err(Error::Backend(msg)) => assert!(msg.contains("no-such-ca.crt"), "{msg}"),
        other => panic!("a missing CA file must be a Backend error: {other:?}"),
    }
    let mut half = etcd.options(endpoints, "/tls", Duration::from_secs(2));
    half.tls = Some(EtcdTls {
        key_file: None,
        ..pki.client_tls()
    });
    assert!(matches!(
        EtcdStore::connect(half).await,
        Err(Error::Backend(_))
    ));
}

//! Leader election against a real in-process API server: of two electors
//! exactly one leads; when the leader dies the other takes over once the
//! lease expires; a leader shutting down releases the lease so the standby
//! takes over at once; a leader whose lease is taken stops its work.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wasmkube_client::leader_election::{LeaderConfig, run_while_leader};

const LEASE: &str = "test-lease";

struct Server {
    _dir: tempfile::TempDir,
    client: kube::Client,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn server() -> Result<Server> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let running = wasmkube_apiserver::start(
        wasmkube_apiserver::Config {
            data_dir: dir.path().join("data"),
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            shutdown_grace: Duration::from_secs(1),
            component_users: vec![],
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await?;
    let kc = Kubeconfig::read_from(&running.kubeconfig_path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Server {
        _dir: dir,
        client: kube::Client::try_from(config)?,
        shutdown,
    })
}

/// Who is running the led work right now, and the most that ever did at
/// once.
#[derive(Default)]
struct Leaders {
    now: Mutex<Vec<&'static str>>,
    most_at_once: AtomicUsize,
    starts: AtomicUsize,
}

impl Leaders {
    fn current(&self) -> Vec<&'static str> {
        self.now.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Takes `who` out of the leaders when the work ends, however it ends
/// (cancelled, or dropped with an aborted elector).
struct Leading(Arc<Leaders>, &'static str);

impl Drop for Leading {
    fn drop(&mut self) {
        if let Ok(mut v) = self.0.now.lock() {
            v.retain(|w| *w != self.1);
        }
    }
}

fn elector(
    client: kube::Client,
    who: &'static str,
    config: LeaderConfig,
    leaders: Arc<Leaders>,
    shutdown: CancellationToken,
) -> JoinHandle<Result<(), wasmkube_client::leader_election::Error>> {
    tokio::spawn(run_while_leader(client, config, shutdown, move |token| {
        let leaders = leaders.clone();
        async move {
            let n = {
                let mut v = leaders.now.lock().map_err(|_| std::fmt::Error)?;
                v.push(who);
                v.len()
            };
            leaders.most_at_once.fetch_max(n, Ordering::SeqCst);
            leaders.starts.fetch_add(1, Ordering::SeqCst);
            let _leading = Leading(leaders.clone(), who);
            token.cancelled().await;
            Ok::<(), std::fmt::Error>(())
        }
    }))
}

fn config(identity: &str, lease_duration: Duration) -> LeaderConfig {
    LeaderConfig {
        lease_duration,
        renew_deadline: lease_duration.mul_f64(0.66),
        retry_period: Duration::from_millis(200),
        ..LeaderConfig::new(LEASE, identity)
    }
}

async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn holder(leases: &Api<Lease>) -> Result<Option<String>> {
    Ok(leases
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity))
}

async fn sole_leader(leaders: &Leaders, what: &str, timeout: Duration) -> Result<&'static str> {
    eventually(what, timeout, || async {
        let now = leaders.current();
        Ok((now.len() == 1).then(|| now[0]))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_leads_and_the_other_takes_over_when_the_leader_dies() -> Result<()> {
    let s = server().await?;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "kube-system");
    let leaders = Arc::new(Leaders::default());
    let lease_duration = Duration::from_secs(3);
    let stop = CancellationToken::new();
    let a = elector(
        s.client.clone(),
        "a",
        config("a", lease_duration),
        leaders.clone(),
        stop.clone(),
    );
    let b = elector(
        s.client.clone(),
        "b",
        config("b", lease_duration),
        leaders.clone(),
        stop.clone(),
    );
    let first = sole_leader(&leaders, "a leader", Duration::from_secs(10)).await?;
    assert_eq!(holder(&leases).await?.as_deref(), Some(first));

    // Several renewals later, still the same single leader.
    let lease = leases.get(LEASE).await?;
    let renewed_at = lease.spec.as_ref().and_then(|s| s.renew_time.clone());
    eventually("a few renewals", Duration::from_secs(5), || async {
        let now = leases.get(LEASE).await?;
        let rt = now.spec.as_ref().and_then(|s| s.renew_time.clone());
        Ok(
            (rt > renewed_at && now.metadata.resource_version != lease.metadata.resource_version)
                .then_some(()),
        )
    })
    .await?;
    assert_eq!(leaders.current(), vec![first]);

    // The leader dies without releasing (its task is dropped mid-flight).
    let (dying, survivor, other) = if first == "a" {
        (a, b, "b")
    } else {
        (b, a, "a")
    };
    dying.abort();
    let died = Instant::now();
    let _ = dying.await;
    let next = sole_leader(&leaders, "the survivor to take over", lease_duration * 3).await?;
    let took = died.elapsed();
    assert_eq!(next, other);
    assert!(
        took <= lease_duration + Duration::from_secs(1),
        "took over after {took:?}, more than the lease duration ({lease_duration:?}) + a retry"
    );
    let spec = leases.get(LEASE).await?.spec.unwrap_or_default();
    assert_eq!(spec.holder_identity.as_deref(), Some(other));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(leaders.most_at_once.load(Ordering::SeqCst), 1);

    stop.cancel();
    survivor.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shutting_down_releases_the_lease_and_the_standby_takes_over_at_once() -> Result<()>
{
    let s = server().await?;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "kube-system");
    let leaders = Arc::new(Leaders::default());
    // Far longer than the handover may take.
    let lease_duration = Duration::from_secs(30);
    let stop_a = CancellationToken::new();
    let a = elector(
        s.client.clone(),
        "a",
        config("a", lease_duration),
        leaders.clone(),
        stop_a.clone(),
    );
    sole_leader(&leaders, "a to lead", Duration::from_secs(10)).await?;
    let stop_b = CancellationToken::new();
    let b = elector(
        s.client.clone(),
        "b",
        config("b", lease_duration),
        leaders.clone(),
        stop_b.clone(),
    );
    // b stands by: it has tried and seen a as the holder.
    eventually("b to stand by", Duration::from_secs(5), || async {
        Ok((holder(&leases).await?.as_deref() == Some("a")).then_some(()))
    })
    .await?;

    stop_a.cancel();
    let stopped = Instant::now();
    a.await??;
    assert_eq!(holder(&leases).await?.as_deref().unwrap_or("b"), "b");
    sole_leader(&leaders, "b to take over", Duration::from_secs(5)).await?;
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "handover took {took:?} (lease {lease_duration:?})"
    );
    assert_eq!(leaders.current(), vec!["b"]);
    assert_eq!(holder(&leases).await?.as_deref(), Some("b"));
    assert_eq!(leaders.most_at_once.load(Ordering::SeqCst), 1);

    stop_b.cancel();
    b.await??;
    assert_eq!(holder(&leases).await?, None, "released on shutdown");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_taken_stops_its_work_and_tries_again() -> Result<()> {
    let s = server().await?;
    let leases: Api<Lease> = Api::namespaced(s.client.clone(), "kube-system");
    let leaders = Arc::new(Leaders::default());
    let stop = CancellationToken::new();
    let a = elector(
        s.client.clone(),
        "a",
        config("a", Duration::from_secs(30)),
        leaders.clone(),
        stop.clone(),
    );
    sole_leader(&leaders, "a to lead", Duration::from_secs(10)).await?;

    // Someone else writes itself in as the holder, with a fresh renewal.
    let mut lease = leases.get(LEASE).await?;
    if let Some(spec) = lease.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
    }
    let written = loop {
        match leases.replace(LEASE, &PostParams::default(), &lease).await {
            Ok(l) => break l,
            // a renewed in between: take the fresh copy and try again.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let spec = lease.spec.take();
                lease = leases.get(LEASE).await?;
                lease.spec = spec;
            }
            Err(e) => return Err(e.into()),
        }
    };
    eventually("a to stop leading", Duration::from_secs(5), || async {
        Ok(leaders.current().is_empty().then_some(()))
    })
    .await?;
    assert_eq!(holder(&leases).await?.as_deref(), Some("intruder"));

    // The intruder lets go: a leads again.
    let mut free = written;
    if let Some(spec) = free.spec.as_mut() {
        spec.holder_identity = None;
    }
    leases.replace(LEASE, &PostParams::default(), &free).await?;
    sole_leader(&leaders, "a to lead again", Duration::from_secs(5)).await?;
    assert_eq!(leaders.starts.load(Ordering::SeqCst), 2);

    stop.cancel();
    a.await??;
    Ok(())
}

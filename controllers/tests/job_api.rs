//! Jobs against a real in-process API server and the controller manager.
//! No kubelet runs here: a helper task plays its part, starting every new
//! pod (Running, Ready) and, on its next pass, ending it the way its image
//! says: `ok:*` succeeds, `fail:*` fails, anything else runs forever.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wasmkube_controllers::ControllersConfig;
use wasmkube_controllers::ownership::controller_of;

async fn client(path: &std::path::Path, token: Option<&str>) -> Result<kube::Client> {
    let mut kc = Kubeconfig::read_from(path)?;
    if let Some(token) = token {
        for named in &mut kc.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.token = Some(token.to_string().into());
            }
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn image(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or("")
}

/// Plays the kubelet. Records the most pods it ever saw running at once.
fn fake_kubelet(
    pods: Api<Pod>,
    most_running: Arc<AtomicUsize>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !stop.is_cancelled() {
            tick.tick().await;
            let all = pods.list(&ListParams::default()).await?.items;
            let running = all
                .iter()
                .filter(|p| phase(p) == "Running" && p.metadata.deletion_timestamp.is_none())
                .count();
            most_running.fetch_max(running, Ordering::SeqCst);
            for mut p in all {
                if p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let next = match (phase(&p), image(&p).split(':').next()) {
                    ("Pending", _) => "Running",
                    ("Running", Some("ok")) => "Succeeded",
                    ("Running", Some("fail")) => "Failed",
                    _ => continue,
                };
                let ready = next == "Running";
                p.status = Some(PodStatus {
                    phase: Some(next.into()),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: if ready { "True" } else { "False" }.into(),
                        last_transition_time: Some(Time(jiff::Timestamp::now())),
                        ..Default::default()
                    }]),
                    ..Default::default()
                });
                let name = p.metadata.name.clone().unwrap_or_default();
                match pods.replace_status(&name, &PostParams::default(), &p).await {
                    Ok(_) => {}
                    // Changed or deleted meanwhile: the next tick sees it.
                    Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    })
}

/// An API server plus the controller manager and the stand-in kubelet.
struct Cluster {
    admin: kube::Client,
    most_running: Arc<AtomicUsize>,
    stop: CancellationToken,
    api_shutdown: CancellationToken,
    controllers: tokio::task::JoinHandle<Result<(), wasmkube_controllers::Error>>,
    kubelet: tokio::task::JoinHandle<Result<()>>,
    done: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let api_shutdown = CancellationToken::new();
        let running = wasmkube_apiserver::start(
            wasmkube_apiserver::Config {
                data_dir: dir.path().join("data"),
                bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                shutdown_grace: Duration::from_secs(1),
                component_users: vec!["system:kube-controller-manager".to_string()],
                ..Default::default()
            },
            api_shutdown.clone(),
        )
        .await?;
        let admin = client(&running.kubeconfig_path, None).await?;
        let token = running
            .tokens
            .get("system:kube-controller-manager")
            .context("controller-manager token")?;
        let cm = client(&running.kubeconfig_path, Some(token)).await?;
        let stop = CancellationToken::new();
        let controllers = tokio::spawn(wasmkube_controllers::run(
            cm,
            ControllersConfig::default(),
            stop.clone(),
        ));
        let most_running = Arc::new(AtomicUsize::new(0));
        let kubelet = fake_kubelet(
            Api::namespaced(admin.clone(), "default"),
            most_running.clone(),
            stop.clone(),
        );
        Ok(Cluster {
            admin,
            most_running,
            stop,
            api_shutdown,
            controllers,
            kubelet,
            done: running.done,
            _dir: dir,
        })
    }

    async fn stop(self) -> Result<()> {
        self.stop.cancel();
        self.controllers.await??;
        self.kubelet.await??;
        self.api_shutdown.cancel();
        let _ = self.done.await;
        Ok(())
    }
}

fn job(name: &str, image: &str, spec: serde_json::Value) -> Result<Job> {
    let mut j = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image}],
            }},
        },
    });
    if let (Some(s), Some(extra)) = (j["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    Ok(serde_json::from_value(j)?)
}

fn condition(j: &Job, type_: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The pods whose controller is the Job with `uid`.
async fn pods_of(pods: &Api<Pod>, uid: &str) -> Result<Vec<Pod>> {
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| controller_of(&p.metadata).is_some_and(|r| r.uid == uid))
        .collect())
}

async fn event_reasons(events: &Api<Event>, job: &str) -> Result<Vec<String>> {
    Ok(events
        .list(&ListParams::default().fields(&format!("involvedObject.name={job}")))
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_its_completions_two_at_a_time_and_goes_after_its_ttl() -> Result<()> {
    let cluster = Cluster::start().await?;
    let jobs: Api<Job> = Api::namespaced(cluster.admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), "default");
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), "default");

    // Pods that would restart forever are refused, as in Kubernetes.
    let mut always = job("always", "ok:v1", json!({}))?;
    if let Some(s) = always.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        s.restart_policy = Some("Always".into());
    }
    match jobs.create(&PostParams::default(), &always).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains("spec.template.spec.restartPolicy"),
                "{}",
                s.message
            );
        }
        other => bail!("a Job of restartPolicy Always was accepted: {other:?}"),
    }

    let created = jobs
        .create(
            &PostParams::default(),
            &job("pi", "ok:v1", json!({"completions": 5, "parallelism": 2}))?,
        )
        .await?;
    let uid = created.metadata.uid.clone().context("uid")?;
    // The server generated the selector and the pod labels from the uid.
    let spec = created.spec.clone().context("spec")?;
    assert_eq!(
        spec.selector.and_then(|s| s.match_labels),
        Some(BTreeMap::from([(
            "batch.kubernetes.io/controller-uid".to_string(),
            uid.clone()
        )]))
    );
    assert_eq!(spec.backoff_limit, Some(6));
    let done = eventually("job pi to complete", || async {
        let j = jobs.get("pi").await?;
        Ok(condition(&j, "Complete").map(|_| j))
    })
    .await?;
    let status = done.status.clone().context("status")?;
    assert_eq!(status.succeeded, Some(5));
    assert_eq!(status.failed, None);
    assert_eq!(status.active, None);
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert!(condition(&done, "SuccessCriteriaMet").is_some());
    assert_eq!(condition(&done, "Failed"), None);
    let owned = pods_of(&pods, &uid).await?;
    assert_eq!(owned.len(), 5, "one pod per completion");
    for p in &owned {
        assert_eq!(phase(p), "Succeeded");
        assert!(
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("pi-"))
        );
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("batch.kubernetes.io/job-name")
                .map(String::as_str),
            Some("pi")
        );
        assert_eq!(labels.get("controller-uid"), Some(&uid));
    }
    let most = cluster.most_running.load(Ordering::SeqCst);
    assert!((1..=2).contains(&most), "{most} pods ran at once");
    let reasons = eventually("the job's events", || async {
        let r = event_reasons(&events, "pi").await?;
        let creates = r.iter().filter(|r| *r == "SuccessfulCreate").count();
        Ok((creates == 5 && r.iter().any(|r| r == "Completed")).then_some(r))
    })
    .await?;
    assert!(!reasons.iter().any(|r| r == "BackoffLimitExceeded"));

    // A TTL set after the fact applies too: the Job goes, its pods follow.
    jobs.patch(
        "pi",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttlSecondsAfterFinished": 0}})),
    )
    .await?;
    eventually("job pi and its pods to be deleted", || async {
        let gone = jobs.get_opt("pi").await?.is_none();
        Ok((gone && pods_of(&pods, &uid).await?.is_empty()).then_some(()))
    })
    .await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_job_stops_at_its_backoff_limit_and_can_be_orphaned() -> Result<()> {
    let cluster = Cluster::start().await?;
    let jobs: Api<Job> = Api::namespaced(cluster.admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), "default");
    let events: Api<Event> = Api::namespaced(cluster.admin.clone(), "default");

    let created = jobs
        .create(
            &PostParams::default(),
            &job("crash", "fail:v1", json!({"backoffLimit": 2}))?,
        )
        .await?;
    let uid = created.metadata.uid.clone().context("uid")?;
    let failed = eventually("job crash to fail", || async {
        let j = jobs.get("crash").await?;
        Ok(condition(&j, "Failed").map(|c| (j, c)))
    })
    .await?;
    let (j, (reason, message)) = failed;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(message, "Job has reached the specified backoff limit");
    assert_eq!(condition(&j, "Complete"), None);
    let status = j.status.clone().context("status")?;
    assert_eq!(status.failed, Some(3), "backoffLimit 2 allows two retries");
    assert_eq!(status.succeeded, None);
    assert_eq!(status.completion_time, None);
    let owned = pods_of(&pods, &uid).await?;
    assert_eq!(owned.len(), 3);
    assert!(owned.iter().all(|p| phase(p) == "Failed"));
    eventually("the BackoffLimitExceeded event", || async {
        let r = event_reasons(&events, "crash").await?;
        Ok(r.iter().any(|r| r == "BackoffLimitExceeded").then_some(()))
    })
    .await?;

    // `kubectl delete job --cascade=orphan`: the Job goes, its pods stay.
    jobs.delete("crash", &DeleteParams::orphan()).await?;
    let left = eventually("job crash to be orphan-deleted", || async {
        if jobs.get_opt("crash").await?.is_some() {
            return Ok(None);
        }
        let all = pods
            .list(&ListParams::default().labels(&format!("controller-uid={uid}")))
            .await?;
        let free = all
            .items
            .iter()
            .all(|p| controller_of(&p.metadata).is_none());
        Ok(free.then_some(all.items.len()))
    })
    .await?;
    assert_eq!(left, 3);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_deadline_fails_a_job_and_stops_its_pods() -> Result<()> {
    let cluster = Cluster::start().await?;
    let jobs: Api<Job> = Api::namespaced(cluster.admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(cluster.admin.clone(), "default");
    let created = jobs
        .create(
            &PostParams::default(),
            &job(
                "forever",
                "idle:v1",
                json!({"parallelism": 2, "completions": 4, "activeDeadlineSeconds": 1}),
            )?,
        )
        .await?;
    let uid = created.metadata.uid.clone().context("uid")?;
    let (reason, _) = eventually("job forever to pass its deadline", || async {
        Ok(condition(&jobs.get("forever").await?, "Failed"))
    })
    .await?;
    assert_eq!(reason, "DeadlineExceeded");
    // Its running pods were stopped (unbound pods go at once).
    eventually("the job's pods to be stopped", || async {
        let live = pods_of(&pods, &uid)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        Ok((live == 0).then_some(()))
    })
    .await?;

    // `kubectl delete job --cascade=foreground`: the pods go first, then the Job.
    jobs.delete("forever", &DeleteParams::foreground()).await?;
    eventually("job forever and its pods to be deleted", || async {
        let gone = jobs.get_opt("forever").await?.is_none();
        Ok((gone && pods_of(&pods, &uid).await?.is_empty()).then_some(()))
    })
    .await?;
    cluster.stop().await
}

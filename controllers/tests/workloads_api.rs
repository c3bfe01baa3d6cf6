//! Deployments, ReplicaSets and the garbage collector against a real
//! in-process API server. No kubelet runs here: a helper task plays the
//! kubelet's part by marking every new pod Running and Ready through the
//! status subresource.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::core::v1::{
    Container, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio_util::sync::CancellationToken;
use wasmkube_controllers::ControllersConfig;
use wasmkube_controllers::deployment::{POD_TEMPLATE_HASH, REVISION, rollout_complete};
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

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "web".to_string())].into()
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "web".into(),
                        image: Some(image.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Plays the kubelet: every live pod that is not Ready becomes Running and Ready.
fn fake_kubelet(pods: Api<Pod>, stop: CancellationToken) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while !stop.is_cancelled() {
            tick.tick().await;
            for mut p in pods.list(&ListParams::default()).await?.items {
                let finished = matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                );
                if is_ready(&p) || finished || p.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                p.status = Some(PodStatus {
                    phase: Some("Running".into()),
                    conditions: Some(vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
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

fn live(pods: Vec<Pod>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// Waits for `kubectl rollout status` to consider the rollout done with
/// `replicas` live pods all carrying the new ReplicaSet's hash.
async fn rolled_out(
    deploys: &Api<Deployment>,
    rss: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    replicas: usize,
) -> Result<(Deployment, ReplicaSet, Vec<Pod>)> {
    eventually(&format!("a finished rollout of {replicas}"), || async {
        let d = deploys.get("web").await?;
        if !rollout_complete(&d) {
            return Ok(None);
        }
        let uid = d.metadata.uid.clone();
        let owned: Vec<ReplicaSet> = rss
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|r| {
                controller_of(&r.metadata).map(|o| Some(o.uid.clone())) == Some(uid.clone())
            })
            .collect();
        let Some(new) = owned
            .iter()
            .find(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 || replicas == 0)
            .cloned()
        else {
            return Ok(None);
        };
        let hash = new
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            .cloned()
            .unwrap_or_default();
        let live = live(pods.list(&ListParams::default()).await?.items);
        let all_new = live.iter().all(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH))
                == Some(&hash)
        });
        let active_rs = owned
            .iter()
            .filter(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .count();
        Ok((live.len() == replicas && all_new && active_rs <= 1).then_some((d, new, live)))
    })
    .await
}

/// An API server plus the controller manager and the stand-in kubelet.
struct Cluster {
    admin: kube::Client,
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
        let kubelet = fake_kubelet(Api::namespaced(admin.clone(), "default"), stop.clone());
        Ok(Cluster {
            admin,
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

/// Live pods (not being deleted) after one watch event: (template hash, ready).
type Snapshot = Vec<(String, bool)>;
type Timeline = std::sync::Arc<std::sync::Mutex<Vec<Snapshot>>>;

/// Records the live pods after every pod watch event, in the order the
/// API server wrote them.
fn pod_timeline(
    pods: Api<Pod>,
    stop: CancellationToken,
) -> (Timeline, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let timeline: Timeline = std::sync::Arc::default();
    let out = timeline.clone();
    let task = tokio::spawn(async move {
        let mut seen: BTreeMap<String, Pod> = BTreeMap::new();
        let mut listed = false;
        let mut stream = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = stream.next() => ev,
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(_)) => continue,
                None => return,
            };
            match ev {
                watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                    seen.insert(p.metadata.name.clone().unwrap_or_default(), p);
                }
                watcher::Event::Delete(p) => {
                    seen.remove(p.metadata.name.as_deref().unwrap_or_default());
                }
                watcher::Event::Init => continue,
                // Partial initial lists are not states the cluster was in.
                watcher::Event::InitDone => listed = true,
            }
            if !listed {
                continue;
            }
            let snap: Snapshot = seen
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| (hash_of(&p.metadata), is_ready(p)))
                .collect();
            if let Ok(mut t) = out.lock() {
                t.push(snap);
            }
        }
    });
    (timeline, task)
}

fn hash_of(meta: &ObjectMeta) -> String {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH))
        .cloned()
        .unwrap_or_default()
}

fn last_snapshot(t: &Timeline) -> Option<Snapshot> {
    t.lock().ok().and_then(|t| t.last().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_scales_updates_and_is_collected() -> Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.admin.clone();
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");

    // 3 replicas: one ReplicaSet `web-<hash>` at revision 1 with 3 owned pods.
    deploys
        .create(&PostParams::default(), &deployment(3, "idle:v1"))
        .await?;
    let (d, rs1, live1) = rolled_out(&deploys, &rss, &pods, 3).await?;
    // Controller writes (status, the revision annotation) leave the
    // generation alone.
    assert_eq!(d.metadata.generation, Some(1));
    let rs1_name = rs1.metadata.name.clone().unwrap_or_default();
    let hash = rs1
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POD_TEMPLATE_HASH))
        .cloned()
        .unwrap_or_default();
    assert_eq!(rs1_name, format!("web-{hash}"));
    assert_eq!(
        rs1.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("1")
    );
    let owner = controller_of(&rs1.metadata).cloned().context("rs owner")?;
    assert_eq!(Some(owner.uid), d.metadata.uid.clone());
    assert_eq!(owner.block_owner_deletion, Some(true));
    for p in &live1 {
        let o = controller_of(&p.metadata).cloned().context("pod owner")?;
        assert_eq!(
            (o.kind.as_str(), Some(o.uid)),
            ("ReplicaSet", rs1.metadata.uid.clone())
        );
        assert!(
            p.metadata
                .name
                .as_deref()
                .unwrap_or("")
                .starts_with(&format!("{rs1_name}-"))
        );
    }
    let status = d.status.clone().unwrap_or_default();
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas,
            status.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    let conds = status.conditions.unwrap_or_default();
    let reason = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let rs_status = rss.get(&rs1_name).await?.status.unwrap_or_default();
    assert_eq!(rs_status.replicas, 3);

    // Scale up and down: the same ReplicaSet follows.
    let scale = |n: i32| serde_json::json!({"spec": {"replicas": n}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale(5)))
        .await?;
    let (_, rs, _) = rolled_out(&deploys, &rss, &pods, 5).await?;
    assert_eq!(rs.metadata.name.as_deref(), Some(rs1_name.as_str()));
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale(1)))
        .await?;
    let (_, rs, _) = rolled_out(&deploys, &rss, &pods, 1).await?;
    assert_eq!(rs.metadata.name.as_deref(), Some(rs1_name.as_str()));
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&scale(3)))
        .await?;
    rolled_out(&deploys, &rss, &pods, 3).await?;

    // A new image: a second ReplicaSet at revision 2 takes over, the first
    // stays (history) at zero. With 3 replicas the defaults (25%) mean
    // maxSurge 1 and maxUnavailable 0: never fewer than 3 ready pods.
    let watching = CancellationToken::new();
    let (timeline, watch_task) = pod_timeline(pods.clone(), watching.clone());
    eventually("the pod watch to list the pods", || async {
        Ok(last_snapshot(&timeline)
            .is_some_and(|s| s.len() == 3)
            .then_some(()))
    })
    .await?;
    let image = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "idle:v2"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&image))
        .await?;
    let (d, rs2, live2) = rolled_out(&deploys, &rss, &pods, 3).await?;
    let new_hash = hash_of(&rs2.metadata);
    eventually("the watch to see the finished rollout", || async {
        let done = last_snapshot(&timeline)
            .is_some_and(|s| s.len() == 3 && s.iter().all(|(h, ready)| *h == new_hash && *ready));
        Ok(done.then_some(()))
    })
    .await?;
    watching.cancel();
    let _ = watch_task.await;
    let snaps = timeline.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(
        snaps.iter().any(|s| s.iter().any(|(h, _)| *h != new_hash)),
        "the watch saw the old pods"
    );
    for s in &snaps {
        let ready = s.iter().filter(|(_, r)| *r).count();
        assert!(ready >= 3, "availability dropped to {ready}: {s:?}");
    }
    assert_ne!(rs2.metadata.name, rs1.metadata.name);
    assert_eq!(
        rs2.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("2")
    );
    let old = rss.get(&rs1_name).await?;
    assert_eq!(old.spec.as_ref().and_then(|s| s.replicas), Some(0));
    for p in &live2 {
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone());
        assert_eq!(image.as_deref(), Some("idle:v2"));
    }

    // Paused: a template change rolls nothing out until resumed.
    let pause = |on: bool| serde_json::json!({"spec": {"paused": on}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await?;
    let image3 = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "idle:v3"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&image3))
        .await?;
    eventually("the pause to be observed", || async {
        let d = deploys.get("web").await?;
        let status = d.status.clone().unwrap_or_default();
        let paused =
            status.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
        Ok((paused && status.observed_generation >= d.metadata.generation).then_some(()))
    })
    .await?;
    assert_eq!(
        rss.list(&ListParams::default()).await?.items.len(),
        2,
        "no new ReplicaSet while paused"
    );
    assert!(!rollout_complete(&deploys.get("web").await?));
    deploys
        .patch("web", &PatchParams::default(), &Patch::Merge(&pause(false)))
        .await?;
    let (_, rs3, _) = rolled_out(&deploys, &rss, &pods, 3).await?;
    assert_eq!(
        rs3.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .map(String::as_str),
        Some("3")
    );

    // Deleting the Deployment takes its ReplicaSets and pods with it.
    deploys.delete("web", &DeleteParams::background()).await?;
    eventually("ReplicaSets and pods to be collected", || async {
        let rs_left = rss.list(&ListParams::default()).await?.items.len();
        let pods_left = pods.list(&ListParams::default()).await?.items.len();
        Ok((rs_left == 0 && pods_left == 0).then_some(()))
    })
    .await?;

    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_every_old_pod_before_creating_new_ones() -> Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.admin.clone();
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let mut d = deployment(2, "idle:v1");
    if let Some(spec) = d.spec.as_mut() {
        spec.strategy = Some(k8s_openapi::api::apps::v1::DeploymentStrategy {
            type_: Some("Recreate".into()),
            rolling_update: None,
        });
    }
    deploys.create(&PostParams::default(), &d).await?;
    rolled_out(&deploys, &rss, &pods, 2).await?;
    let watching = CancellationToken::new();
    let (timeline, watch_task) = pod_timeline(pods.clone(), watching.clone());
    eventually("the pod watch to list the pods", || async {
        Ok(last_snapshot(&timeline)
            .is_some_and(|s| s.len() == 2)
            .then_some(()))
    })
    .await?;
    let image = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "idle:v2"}]}}}});
    deploys
        .patch("web", &PatchParams::default(), &Patch::Strategic(&image))
        .await?;
    let (_, rs2, _) = rolled_out(&deploys, &rss, &pods, 2).await?;
    let new_hash = hash_of(&rs2.metadata);
    eventually("the watch to see the new pods", || async {
        Ok(last_snapshot(&timeline)
            .is_some_and(|s| s.len() == 2 && s.iter().all(|(h, r)| *h == new_hash && *r))
            .then_some(()))
    })
    .await?;
    watching.cancel();
    let _ = watch_task.await;
    let snaps = timeline.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(
        snaps.iter().any(|s| s.is_empty()),
        "all old pods went first"
    );
    for s in &snaps {
        let hashes: std::collections::BTreeSet<&String> = s.iter().map(|(h, _)| h).collect();
        assert!(hashes.len() <= 1, "old and new pods ran together: {s:?}");
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_adopts_orphans_releases_relabelled_pods_and_replaces_failed_ones() -> Result<()>
{
    let cluster = Cluster::start().await?;
    let admin = cluster.admin.clone();
    let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let db: BTreeMap<String, String> = [("app".to_string(), "db".to_string())].into();
    let spec = PodSpec {
        containers: vec![Container {
            name: "db".into(),
            image: Some("idle:v1".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let orphan = pods
        .create(
            &PostParams::default(),
            &Pod {
                metadata: ObjectMeta {
                    name: Some("orphan".into()),
                    labels: Some(db.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
                status: None,
            },
        )
        .await?;
    let rs = rss
        .create(
            &PostParams::default(),
            &ReplicaSet {
                metadata: ObjectMeta {
                    name: Some("db".into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                    replicas: Some(2),
                    selector: LabelSelector {
                        match_labels: Some(db.clone()),
                        ..Default::default()
                    },
                    template: Some(PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(db.clone()),
                            ..Default::default()
                        }),
                        spec: Some(spec),
                    }),
                    ..Default::default()
                }),
                status: None,
            },
        )
        .await?;
    let rs_uid = rs.metadata.uid.clone();
    let owned = || async {
        let items = live(pods.list(&ListParams::default()).await?.items);
        Ok::<_, anyhow::Error>(
            items
                .into_iter()
                // Owned and still matching: a relabelled pod counts only
                // until it is released.
                .filter(|p| {
                    p.metadata.labels.as_ref() == Some(&db)
                        && controller_of(&p.metadata).map(|o| Some(o.uid.clone()))
                            == Some(rs_uid.clone())
                })
                .collect::<Vec<_>>(),
        )
    };
    let ready_pair = || async {
        let o = owned().await?;
        let status = rss.get("db").await?.status.unwrap_or_default();
        Ok(
            (o.len() == 2 && o.iter().all(is_ready) && status.ready_replicas == Some(2))
                .then_some(o),
        )
    };
    // The orphan is adopted and only one pod is created beside it.
    let first = eventually("two ready pods, the orphan adopted", ready_pair).await?;
    assert!(first.iter().any(|p| p.metadata.uid == orphan.metadata.uid));
    assert_eq!(pods.list(&ListParams::default()).await?.items.len(), 2);

    // Relabelled: released (no owner) and replaced.
    let mut relabelled = pods.get("orphan").await?;
    relabelled.metadata.labels = Some([("app".to_string(), "debug".to_string())].into());
    pods.replace("orphan", &PostParams::default(), &relabelled)
        .await?;
    let second = eventually("a replacement for the released pod", ready_pair).await?;
    assert!(
        second
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some("orphan"))
    );
    eventually("the relabelled pod to be released", || async {
        let p = pods.get("orphan").await?;
        Ok(controller_of(&p.metadata).is_none().then_some(()))
    })
    .await?;

    // A failed pod is deleted and replaced.
    let mut failed = second.first().cloned().context("a pod")?;
    let failed_name = failed.metadata.name.clone().unwrap_or_default();
    failed.status = Some(PodStatus {
        phase: Some("Failed".into()),
        ..Default::default()
    });
    pods.replace_status(&failed_name, &PostParams::default(), &failed)
        .await?;
    let third = eventually("a replacement for the failed pod", || async {
        let gone = pods.get_opt(&failed_name).await?.is_none();
        Ok(if gone { ready_pair().await? } else { None })
    })
    .await?;
    assert!(
        third
            .iter()
            .all(|p| p.metadata.name.as_deref() != Some(failed_name.as_str()))
    );

    // Deleting the ReplicaSet collects its pods but not the released one.
    rss.delete("db", &DeleteParams::background()).await?;
    eventually("the ReplicaSet's pods to be collected", || async {
        let names: Vec<String> = pods
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        Ok((names == ["orphan"]).then_some(()))
    })
    .await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_and_foreground_propagation_steer_the_garbage_collector() -> Result<()> {
    let cluster = Cluster::start().await?;
    let admin = cluster.admin.clone();
    let deploys: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(admin.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    deploys
        .create(&PostParams::default(), &deployment(2, "idle:v1"))
        .await?;
    let (_, rs, _) = rolled_out(&deploys, &rss, &pods, 2).await?;
    let rs_name = rs.metadata.name.clone().unwrap_or_default();

    // Orphan (`kubectl delete --cascade=orphan`): the Deployment goes, its
    // ReplicaSet stays, unowned, with its pods.
    deploys.delete("web", &DeleteParams::orphan()).await?;
    eventually("the deployment to be deleted", || async {
        Ok(deploys.get_opt("web").await?.is_none().then_some(()))
    })
    .await?;
    let kept = rss.get(&rs_name).await?;
    assert_eq!(kept.metadata.owner_references, None);
    assert_eq!(
        live(pods.list(&ListParams::default()).await?.items).len(),
        2
    );

    // Foreground (`--cascade=foreground`): the pods go before the ReplicaSet does.
    rss.delete(&rs_name, &DeleteParams::foreground()).await?;
    eventually("the replica set to be deleted", || async {
        Ok(rss.get_opt(&rs_name).await?.is_none().then_some(()))
    })
    .await?;
    assert!(pods.list(&ListParams::default()).await?.items.is_empty());
    cluster.stop().await
}

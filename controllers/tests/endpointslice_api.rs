//! Services and their endpoints against a real in-process API server, with
//! real kubelets (two nodes in this process), the scheduler and the
//! controller manager.
//!
//! - Pods selected by a Service show up in its EndpointSlice (owned by the
//!   Service, labelled with its name) and its Endpoints once they run and
//!   are ready, with a named target port resolved per pod (pods with a
//!   different port land in a slice of their own).
//! - A deleted pod leaves them; a selector change swaps the endpoints; a
//!   deleted Service takes its slices and Endpoints with it.

mod common;

use std::collections::BTreeSet;

use anyhow::{Context, Result};
use common::{Cluster, eventually};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use wasmkube_controllers::ControllersConfig;
use wasmkube_controllers::endpointslice::{MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};

fn pod(name: &str, app: &str, port: i32) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "sleeper:v1",
                "ports": [{"name": "http", "containerPort": port}]}]
        }
    }))?)
}

/// Per slice: its ports and the (pod, ready) pairs of its endpoints.
type SliceView = BTreeSet<(Vec<i32>, Vec<(String, bool)>)>;

async fn slices_of(api: &Api<EndpointSlice>, svc: &Service) -> Result<SliceView> {
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let list = api
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}=web")))
        .await?;
    let mut out = SliceView::new();
    for s in list.items {
        let labels = s.metadata.labels.clone().unwrap_or_default();
        anyhow::ensure!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY),
            "slice not labelled as managed: {labels:?}"
        );
        anyhow::ensure!(
            s.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.kind == "Service" && r.uid == uid && r.controller == Some(true)),
            "slice not owned by the service"
        );
        anyhow::ensure!(s.address_type == "IPv4");
        let ports: Vec<i32> = s.ports.iter().flatten().filter_map(|p| p.port).collect();
        let mut eps: Vec<(String, bool)> = s
            .endpoints
            .iter()
            .map(|e| {
                let name = e
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default();
                let ready = e.conditions.as_ref().and_then(|c| c.ready) == Some(true);
                (name, ready)
            })
            .collect();
        eps.sort();
        out.insert((ports, eps));
    }
    Ok(out)
}

/// Ready and not-ready target pod names of the Endpoints object `web`.
async fn endpoints_of(api: &Api<Endpoints>) -> Result<Option<(Vec<String>, Vec<String>)>> {
    let Some(ep) = api.get_opt("web").await? else {
        return Ok(None);
    };
    let names = |l: &Option<Vec<k8s_openapi::api::core::v1::EndpointAddress>>| -> Vec<String> {
        l.iter()
            .flatten()
            .filter_map(|a| a.target_ref.as_ref().and_then(|r| r.name.clone()))
            .collect()
    };
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for s in ep.subsets.iter().flatten() {
        ready.extend(names(&s.addresses));
        not_ready.extend(names(&s.not_ready_addresses));
    }
    ready.sort();
    not_ready.sort();
    Ok(Some((ready, not_ready)))
}

fn view(groups: &[(&[i32], &[&str])]) -> SliceView {
    groups
        .iter()
        .map(|(ports, pods)| {
            (
                ports.to_vec(),
                pods.iter().map(|p| (p.to_string(), true)).collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_track_the_ready_pods_they_select() -> Result<()> {
    let cluster = Cluster::start(2, ControllersConfig::default()).await?;
    let client = cluster.client.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");

    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    }))?;
    let svc = services.create(&PostParams::default(), &svc).await?;
    // Nothing selected yet: one placeholder slice, an Endpoints without subsets.
    eventually("the placeholder slice", || async {
        Ok((slices_of(&slices, &svc).await? == view(&[(&[], &[])])).then_some(()))
    })
    .await?;

    for (name, app, port) in [("a", "web", 8080), ("b", "web", 8080), ("d", "db", 5432)] {
        pods.create(&PostParams::default(), &pod(name, app, port)?)
            .await?;
    }
    eventually("both web pods as ready endpoints on 8080", || async {
        Ok((slices_of(&slices, &svc).await? == view(&[(&[8080], &["a", "b"])])).then_some(()))
    })
    .await?;
    eventually("the Endpoints object to list them", || async {
        Ok(
            (endpoints_of(&endpoints).await? == Some((vec!["a".into(), "b".into()], Vec::new())))
                .then_some(()),
        )
    })
    .await?;
    let slice = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}=web")))
        .await?
        .items
        .into_iter()
        .next()
        .context("slice")?;
    assert!(
        slice
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("web-"))
    );
    let ep = &slice.endpoints[0];
    assert!(
        ep.node_name
            .as_deref()
            .is_some_and(|n| n.starts_with("node-"))
    );
    assert_eq!(
        ep.target_ref.as_ref().and_then(|r| r.kind.as_deref()),
        Some("Pod")
    );
    let port = &slice.ports.as_ref().context("ports")?[0];
    assert_eq!(
        (port.name.as_deref(), port.protocol.as_deref()),
        (Some("web"), Some("TCP"))
    );

    // The named port resolves per pod: a pod serving it elsewhere gets a
    // slice of its own.
    pods.create(&PostParams::default(), &pod("c", "web", 9090)?)
        .await?;
    eventually("a second slice for port 9090", || async {
        Ok(
            (slices_of(&slices, &svc).await? == view(&[(&[8080], &["a", "b"]), (&[9090], &["c"])]))
                .then_some(()),
        )
    })
    .await?;

    // A deleted pod leaves (terminating first, then gone).
    pods.delete("a", &DeleteParams::default()).await?;
    eventually("pod a to leave the endpoints", || async {
        Ok(
            (slices_of(&slices, &svc).await? == view(&[(&[8080], &["b"]), (&[9090], &["c"])]))
                .then_some(()),
        )
    })
    .await?;
    eventually("pod a to leave the Endpoints object", || async {
        let ready = endpoints_of(&endpoints).await?.map(|(r, _)| r);
        Ok((ready == Some(vec!["b".into(), "c".into()])).then_some(()))
    })
    .await?;

    // Selecting other pods (on another port) swaps the endpoints.
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "db"},
                "ports": [{"name": "web", "port": 80, "targetPort": 5432}]}})),
        )
        .await?;
    eventually("the db pod as the only endpoint", || async {
        Ok((slices_of(&slices, &svc).await? == view(&[(&[5432], &["d"])])).then_some(()))
    })
    .await?;
    eventually("the Endpoints object to follow", || async {
        Ok((endpoints_of(&endpoints).await? == Some((vec!["d".into()], Vec::new()))).then_some(()))
    })
    .await?;

    // Deleting the Service takes its slices and Endpoints with it.
    services.delete("web", &DeleteParams::default()).await?;
    eventually("slices and Endpoints to go", || async {
        let none_left = slices_of(&slices, &svc).await?.is_empty();
        Ok((none_left && endpoints.get_opt("web").await?.is_none()).then_some(()))
    })
    .await?;
    Ok(())
}

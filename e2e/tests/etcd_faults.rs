//! Faults under the control plane: a 3-member etcd under two API servers and
//! a steady stream of pod creates. Killing the etcd leader, then a second
//! member (quorum lost), then restarting both: the API keeps answering —
//! failing only while quorum is lost, and then with a 5xx Status that says
//! why — every acknowledged create is there afterwards, and a watcher that
//! resumes from its last resourceVersion (relisting on 410) misses nothing.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::Value;
use wasmkube_e2e::{Cluster, ClusterOptions, Etcd, wait_for};

/// What the writer saw: acknowledged pod names and the failure answers.
#[derive(Default)]
struct Writes {
    acked: Vec<String>,
    failures: Vec<(u16, String)>,
}

/// A pod no scheduler takes (`schedulerName: none`), so the stream measures
/// the API and the store alone.
fn pod(name: &str) -> Value {
    serde_json::json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":name,"labels":{"fault":"test"}},
        "spec":{"schedulerName":"none","containers":[{"name":"c","image":"idle:v1"}]}})
}

/// Follows pod events like a client-go reflector: list, then watch from the
/// list's resourceVersion; when the stream ends, re-watch from the last
/// resourceVersion seen; on 410 Expired, relist.
fn watcher(
    http: reqwest::blocking::Client,
    base: String,
    auth: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<BTreeSet<String>>>,
) {
    let pods = format!("{base}/api/v1/namespaces/default/pods");
    let mut rv: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let from = match rv.clone() {
            Some(rv) => rv,
            None => {
                let Ok(resp) = http.get(&pods).header("Authorization", &auth).send() else {
                    continue;
                };
                let Ok(list) = resp.json::<Value>() else {
                    continue;
                };
                let Some(list_rv) = list["metadata"]["resourceVersion"].as_str() else {
                    continue;
                };
                let mut s = seen.lock().expect("not poisoned");
                for item in list["items"].as_array().into_iter().flatten() {
                    if let Some(n) = item["metadata"]["name"].as_str() {
                        s.insert(n.to_string());
                    }
                }
                list_rv.to_string()
            }
        };
        rv = Some(from.clone());
        let url = format!("{pods}?watch=true&resourceVersion={from}&timeoutSeconds=5");
        let Ok(resp) = http.get(&url).header("Authorization", &auth).send() else {
            continue;
        };
        for line in BufReader::new(resp).lines() {
            let Ok(line) = line else { break };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            if event["type"] == "ERROR" {
                if event["object"]["code"] == 410 {
                    rv = None; // relist
                }
                break;
            }
            if let Some(n) = event["object"]["metadata"]["name"].as_str() {
                seen.lock().expect("not poisoned").insert(n.to_string());
            }
            if let Some(r) = event["object"]["metadata"]["resourceVersion"].as_str() {
                rv = Some(r.to_string());
            }
        }
    }
}

#[test]
fn the_api_survives_etcd_member_failures_without_losing_acknowledged_writes() -> Result<()> {
    let mut etcd = Etcd::start_cluster(3)?;
    let on_etcd = vec!["--etcd-endpoints".to_string(), etcd.endpoints()];
    let a = Cluster::start_with(ClusterOptions {
        extra_args: on_etcd.clone(),
        ..Default::default()
    })?;
    let mut b_args = on_etcd;
    b_args.push("--no-node".into());
    let b = Cluster::start_with(ClusterOptions {
        extra_args: b_args,
        share_credentials_with: Some(a.data_dir()),
    })?;
    let (token, _) = a.credentials()?;
    let auth = format!("Bearer {token}");
    let http = a.http()?;

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let watch = {
        let (http, base, auth, stop, seen) = (
            http.clone(),
            b.url(),
            auth.clone(),
            stop.clone(),
            seen.clone(),
        );
        std::thread::spawn(move || watcher(http, base, auth, stop, seen))
    };
    let writes: Arc<Mutex<Writes>> = Arc::default();
    let writer = {
        let (http, urls, auth, stop, writes) = (
            http.clone(),
            [a.url(), b.url()],
            auth.clone(),
            stop.clone(),
            writes.clone(),
        );
        std::thread::spawn(move || {
            for i in 0u32.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("p-{i}");
                let url = format!("{}/api/v1/namespaces/default/pods", urls[i as usize % 2]);
                match http
                    .post(&url)
                    .header("Authorization", &auth)
                    .json(&pod(&name))
                    .send()
                {
                    Ok(r) if r.status().as_u16() == 201 => {
                        writes.lock().expect("not poisoned").acked.push(name)
                    }
                    Ok(r) => {
                        let code = r.status().as_u16();
                        let body: Value = r.json().unwrap_or_default();
                        let msg = body["message"]
                            .as_str()
                            .unwrap_or("(no Status message)")
                            .to_string();
                        writes
                            .lock()
                            .expect("not poisoned")
                            .failures
                            .push((code, msg));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        writes
                            .lock()
                            .expect("not poisoned")
                            .failures
                            .push((0, e.to_string()));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
    };
    let acked = || writes.lock().expect("not poisoned").acked.len();
    let progress = |what: &str, more: usize| -> Result<()> {
        let target = acked() + more;
        wait_for(what, Duration::from_secs(60), || {
            Ok((acked() >= target).then_some(()))
        })
    };

    progress("creates to flow", 50)?;
    let leader = etcd.leader()?;
    etcd.kill(leader);
    progress("creates to continue after the etcd leader died", 50)?;
    let second = (leader + 1) % 3;
    etcd.kill(second);
    // Quorum is lost: creates fail now. Wait for a failure to be seen.
    let failures_before = writes.lock().expect("not poisoned").failures.len();
    wait_for(
        "creates to fail without quorum",
        Duration::from_secs(60),
        || {
            Ok(
                (writes.lock().expect("not poisoned").failures.len() > failures_before)
                    .then_some(()),
            )
        },
    )?;
    etcd.restart(second)?;
    etcd.restart(leader)?;
    progress("creates to resume once quorum is back", 50)?;
    stop.store(true, Ordering::Relaxed);
    writer.join().map_err(|_| anyhow!("writer panicked"))?;

    let w = writes.lock().expect("not poisoned");
    let codes: BTreeSet<u16> = w.failures.iter().map(|(c, _)| *c).collect();
    eprintln!(
        "{} creates acknowledged, {} refused (codes {codes:?}); first refusal: {:?}",
        w.acked.len(),
        w.failures.len(),
        w.failures.first()
    );
    for (code, message) in &w.failures {
        assert!(
            *code == 0 || (500..600).contains(code),
            "failures are 5xx Status answers (or a dropped connection), got {code}: {message}"
        );
        assert!(!message.is_empty(), "a failure says why");
    }
    assert!(
        w.failures.iter().any(|(c, _)| (500..600).contains(c)),
        "the outage was reported as 5xx: {:?}",
        &w.failures[..w.failures.len().min(5)]
    );

    // Every acknowledged create is stored, as either server reports.
    for base in [a.url(), b.url()] {
        let list: Value = http
            .get(format!("{base}/api/v1/namespaces/default/pods"))
            .header("Authorization", &auth)
            .send()?
            .json()?;
        let stored: BTreeSet<&str> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        let lost: Vec<&String> = w
            .acked
            .iter()
            .filter(|n| !stored.contains(n.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged creates lost via {base}: {:?}",
            lost.len(),
            w.acked.len(),
            &lost[..lost.len().min(10)]
        );
    }

    // The watcher, resuming from its last resourceVersion, saw every one.
    let acked: BTreeSet<String> = w.acked.iter().cloned().collect();
    drop(w);
    wait_for(
        "the watcher to have seen every acknowledged create",
        Duration::from_secs(60),
        || {
            let seen = seen.lock().expect("not poisoned");
            let missing = acked.difference(&seen).count();
            if missing == 0 {
                Ok(Some(()))
            } else {
                Err(anyhow!("{missing} not seen yet"))
            }
        },
    )?;
    stop.store(true, Ordering::Relaxed);
    watch.join().map_err(|_| anyhow!("watcher panicked"))?;
    Ok(())
}

//! `kill -9` of the server during a stream of creates: after a restart on the
//! same data dir, every create the server acknowledged is there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;
use wasmkube_e2e::{Cluster, wait_for};

#[test]
fn acknowledged_creates_survive_kill_9() -> Result<()> {
    let mut c = Cluster::start()?;
    let (token, _) = c.credentials()?;
    let http = c.http()?;
    let url = format!("{}/api/v1/namespaces/default/configmaps", c.url());
    let auth = format!("Bearer {token}");

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, http, url, auth) = (
            acked.clone(),
            stop.clone(),
            http.clone(),
            url.clone(),
            auth.clone(),
        );
        std::thread::spawn(move || {
            for i in 0..100_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("cm-{i}");
                let body = serde_json::json!({"apiVersion":"v1","kind":"ConfigMap",
                    "metadata":{"name":name},"data":{"n":i.to_string()}});
                match http
                    .post(&url)
                    .header("Authorization", &auth)
                    .json(&body)
                    .send()
                {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.lock().expect("not poisoned").push(name)
                    }
                    // The server died mid-request: not acknowledged.
                    _ => break,
                }
            }
        })
    };
    wait_for(
        "a few hundred acknowledged creates",
        Duration::from_secs(120),
        || Ok((acked.lock().expect("not poisoned").len() >= 200).then_some(())),
    )?;
    c.kill9()?;
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer thread");
    let acked = acked.lock().expect("not poisoned").clone();

    c.spawn()?;
    c.wait_ready()?;
    let list: Value = http
        .get(&url)
        .header("Authorization", &auth)
        .send()?
        .json()?;
    let present: std::collections::HashSet<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );

    // The restarted server still takes writes, with revisions past the old ones.
    let after = http.post(&url).header("Authorization", &auth).json(&serde_json::json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after-restart"}})).send()?;
    assert_eq!(after.status().as_u16(), 201);
    Ok(())
}

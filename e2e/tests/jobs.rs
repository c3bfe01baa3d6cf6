//! batch/v1 Jobs with the real binary, real kubectl and real wasm modules:
//! a run-to-completion module finishes its completions a few at a time, and
//! a crashing one stops at its backoff limit.

use std::time::Duration;

use anyhow::{Result, bail};
use wasmkube_e2e::{Cluster, sample_manifest, stderr, stdout, wait_for};

const JOB_TIMEOUT: &str = "--timeout=120s";

/// Pod names of `job` in `phase`.
fn pods_in_phase(c: &Cluster, job: &str, phase: &str) -> Result<Vec<String>> {
    let out = c.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        &format!("batch.kubernetes.io/job-name={job}"),
        "--field-selector",
        &format!("status.phase={phase}"),
        "-o",
        "name",
    ])?;
    Ok(out.lines().map(str::to_string).collect())
}

fn row<'a>(table: &'a str, name: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_default()
}

#[test]
fn job_of_hello_finishes_five_completions_two_at_a_time() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("hello")?;
    let manifest = sample_manifest("job").display().to_string();
    let out = c.kubectl_ok(&["apply", "-f", &manifest])?;
    assert!(out.contains("job.batch/hello created"), "{out}");

    let waited = c.kubectl(&["wait", "--for=condition=complete", "job/hello", JOB_TIMEOUT])?;
    if !waited.status.success() {
        bail!(
            "kubectl wait failed: {}{}\n{}",
            stdout(&waited),
            stderr(&waited),
            c.kubectl_ok(&["get", "job,pods", "-o", "wide"])?
        );
    }
    assert!(stdout(&waited).contains("job.batch/hello condition met"));

    let table = c.kubectl_ok(&["get", "job", "hello"])?;
    let header = table.lines().next().unwrap_or_default();
    for col in ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"] {
        assert!(header.contains(col), "column {col} missing in:\n{table}");
    }
    let hello = row(&table, "hello");
    assert!(
        hello.contains("Complete") && hello.contains("5/5"),
        "{table}"
    );
    let wide = c.kubectl_ok(&["get", "job", "hello", "-o", "wide"])?;
    assert!(
        wide.contains("hello:v1") && wide.contains("batch.kubernetes.io/controller-uid="),
        "{wide}"
    );
    assert_eq!(pods_in_phase(&c, "hello", "Succeeded")?.len(), 5);
    assert_eq!(c.field(&["job", "hello"], "{.status.succeeded}")?, "5");
    assert_eq!(c.field(&["job", "hello"], "{.status.failed}")?, "");

    // Each pod ran the module: its greeting is in the logs.
    let first = pods_in_phase(&c, "hello", "Succeeded")?;
    let logs = c.kubectl_ok(&["logs", &first[0]])?;
    assert!(logs.contains("from a job"), "logs: {logs:?}");

    let selected = c.kubectl_ok(&["get", "jobs", "--field-selector", "status.successful=5"])?;
    assert!(!row(&selected, "hello").is_empty(), "{selected}");
    let all = c.kubectl_ok(&["get", "all"])?;
    assert!(all.contains("job.batch/hello"), "{all}");
    let described = wait_for("the job's events", Duration::from_secs(30), || {
        let d = c.kubectl_ok(&["describe", "job", "hello"])?;
        Ok((d.contains("SuccessfulCreate") && d.contains("Completed")).then_some(d))
    })?;
    assert!(described.contains("5 Succeeded"), "{described}");

    // Deleting the Job takes its pods with it.
    c.kubectl_ok(&["delete", "job", "hello"])?;
    wait_for("the job's pods to go", Duration::from_secs(60), || {
        let left = c.kubectl_ok(&["get", "pods", "-l", "job-name=hello", "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    })?;
    Ok(())
}

const CRASH_JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: crash
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: crash
          image: crash:v1
          env:
            - name: CRASH_AFTER_MS
              value: "100"
            - name: EXIT_CODE
              value: "3"
"#;

#[test]
fn crashing_job_stops_at_its_backoff_limit() -> Result<()> {
    let c = Cluster::start()?;
    c.push_sample("crash")?;
    let out = c.kubectl_stdin(&["apply", "-f", "-"], CRASH_JOB)?;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let waited = c.kubectl(&["wait", "--for=condition=failed", "job/crash", JOB_TIMEOUT])?;
    if !waited.status.success() {
        bail!(
            "kubectl wait failed: {}{}\n{}",
            stdout(&waited),
            stderr(&waited),
            c.kubectl_ok(&["get", "job,pods", "-o", "wide"])?
        );
    }
    let reason = c.field(
        &["job", "crash"],
        r#"{.status.conditions[?(@.type=="Failed")].reason}"#,
    )?;
    assert_eq!(reason, "BackoffLimitExceeded");
    assert_eq!(c.field(&["job", "crash"], "{.status.failed}")?, "3");
    let failed = pods_in_phase(&c, "crash", "Failed")?;
    assert_eq!(failed.len(), 3, "{failed:?}");
    let all = c.kubectl_ok(&["get", "pods", "-l", "job-name=crash", "-o", "name"])?;
    assert_eq!(all.lines().count(), 3, "no pod beyond the limit:\n{all}");
    let exit = c.field(
        &["pod", failed[0].trim_start_matches("pod/")],
        "{.status.containerStatuses[0].state.terminated.exitCode}",
    )?;
    assert_eq!(exit, "3");
    let table = c.kubectl_ok(&["get", "job", "crash"])?;
    let crash = row(&table, "crash");
    assert!(crash.contains("Failed") && crash.contains("0/1"), "{table}");
    let described = wait_for(
        "the BackoffLimitExceeded event",
        Duration::from_secs(30),
        || {
            let d = c.kubectl_ok(&["describe", "job", "crash"])?;
            Ok(d.contains("BackoffLimitExceeded").then_some(d))
        },
    )?;
    assert!(described.contains("3 Failed"), "{described}");
    Ok(())
}

//! The API server's request-limit and audit-log flags of `wasmkube
//! server`, spelled and defaulted as kube-apiserver's where it has them.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::flags;

/// Request limits and the audit log.
#[derive(Debug, Clone, Args)]
pub struct ApiLimitArgs {
    /// Read requests (get, list) served at once; more get 429 with
    /// Retry-After. Watches, logs, exec and port-forward are not counted;
    /// system:masters is never refused. 0 = no limit.
    #[arg(long, default_value_t = 400, value_name = "N")]
    pub max_requests_inflight: usize,

    /// Mutating requests (create, update, patch, delete) served at once;
    /// more get 429 with Retry-After. 0 = no limit.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub max_mutating_requests_inflight: usize,

    /// Watches one user may hold open at once; more get 429. 0 = no limit.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_watches_per_user: usize,

    /// Deadline for a request's response (not for watches, logs, exec or
    /// port-forward); later ones get 504 Timeout. A client's shorter
    /// `?timeout=` wins.
    #[arg(long, default_value = "60s", value_name = "DURATION", value_parser = flags::parse_positive_duration)]
    pub request_timeout: Duration,

    /// Streams one HTTP/2 connection may have open at once.
    #[arg(long = "http2-max-streams-per-connection", default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http2_max_streams_per_connection: u32,

    /// Write an audit record (audit.k8s.io/v1 Event, level Metadata) of
    /// every mutating request to this file, one JSON line each; `-` for
    /// standard output. Off by default.
    #[arg(long, value_name = "PATH")]
    pub audit_log_path: Option<PathBuf>,

    /// Rotate the audit log before it grows past this many megabytes
    /// (0 = never).
    #[arg(long = "audit-log-maxsize", default_value_t = 100, value_name = "MB")]
    pub audit_log_maxsize: u64,

    /// Rotated audit log files kept (0 = all).
    #[arg(long = "audit-log-maxbackup", default_value_t = 10, value_name = "N")]
    pub audit_log_maxbackup: usize,

    /// Days rotated audit log files are kept (0 = regardless of age).
    #[arg(long = "audit-log-maxage", default_value_t = 0, value_name = "DAYS")]
    pub audit_log_maxage: u64,

    /// Also audit reads (get, list, watch), not only mutating requests.
    #[arg(long)]
    pub audit_log_all_requests: bool,
}

impl ApiLimitArgs {
    /// The API server's request limits.
    pub fn api_limits(&self) -> wasmkube_apiserver::limits::ApiLimits {
        wasmkube_apiserver::limits::ApiLimits {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            max_watches_per_user: self.max_watches_per_user,
            request_timeout: self.request_timeout,
            http2_max_streams_per_connection: self.http2_max_streams_per_connection,
            ..Default::default()
        }
    }

    /// The API server's audit log settings.
    pub fn audit(&self) -> wasmkube_apiserver::audit::AuditConfig {
        wasmkube_apiserver::audit::AuditConfig {
            path: self.audit_log_path.clone(),
            max_size_bytes: self.audit_log_maxsize.saturating_mul(1024 * 1024),
            max_backups: self.audit_log_maxbackup,
            max_age: (self.audit_log_maxage > 0)
                .then(|| Duration::from_secs(self.audit_log_maxage.saturating_mul(86_400))),
            all_requests: self.audit_log_all_requests,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: ApiLimitArgs,
    }

    #[test]
    fn defaults_are_kube_apiservers() -> Result<(), clap::Error> {
        let a = Cli::try_parse_from(["x"])?.args;
        let l = a.api_limits();
        assert_eq!(l.max_requests_inflight, 400);
        assert_eq!(l.max_mutating_requests_inflight, 200);
        assert_eq!(l.request_timeout, Duration::from_secs(60));
        assert_eq!(l.http2_max_streams_per_connection, 1000);
        let audit = a.audit();
        assert_eq!(audit.path, None);
        assert_eq!(audit.max_size_bytes, 100 * 1024 * 1024);
        assert_eq!(audit.max_backups, 10);
        assert_eq!(audit.max_age, None);
        assert!(!audit.all_requests);
        Ok(())
    }

    #[test]
    fn flags_set_limits_and_the_audit_log() -> Result<(), clap::Error> {
        let a = Cli::try_parse_from([
            "x",
            "--max-requests-inflight",
            "10",
            "--max-mutating-requests-inflight",
            "0",
            "--max-watches-per-user",
            "5",
            "--request-timeout",
            "1m30s",
            "--http2-max-streams-per-connection",
            "50",
            "--audit-log-path",
            "-",
            "--audit-log-maxsize",
            "2",
            "--audit-log-maxbackup",
            "3",
            "--audit-log-maxage",
            "7",
            "--audit-log-all-requests",
        ])?
        .args;
        let l = a.api_limits();
        assert_eq!(l.max_requests_inflight, 10);
        assert_eq!(l.max_mutating_requests_inflight, 0);
        assert_eq!(l.max_watches_per_user, 5);
        assert_eq!(l.request_timeout, Duration::from_secs(90));
        assert_eq!(l.http2_max_streams_per_connection, 50);
        let audit = a.audit();
        assert_eq!(audit.path, Some(PathBuf::from("-")));
        assert_eq!(audit.max_size_bytes, 2 * 1024 * 1024);
        assert_eq!(audit.max_backups, 3);
        assert_eq!(audit.max_age, Some(Duration::from_secs(7 * 86_400)));
        assert!(audit.all_requests);
        assert!(Cli::try_parse_from(["x", "--request-timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["x", "--http2-max-streams-per-connection", "0"]).is_err());
        Ok(())
    }
}

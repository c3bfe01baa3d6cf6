//! The kubelet flags `wasmkube server` (for its built-in node) and
//! `wasmkube agent` share, parsed once so both spell and default them alike.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::flags;

/// Settings of the node part (the kubelet).
#[derive(Debug, Clone, Args)]
pub struct KubeletArgs {
    /// Port of the kubelet's HTTP endpoint, used by `kubectl logs`
    /// (0 picks a free one).
    #[arg(long, default_value_t = 10250, value_name = "PORT")]
    pub kubelet_port: u16,

    /// HTTP port of the node's proxy: Services answer there by Host header
    /// (`<service>.<namespace>`), and other nodes' proxies forward to it
    /// (0 picks a free one).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub proxy_port: u16,

    /// `leaseDurationSeconds` of the node's Lease in kube-node-lease; the
    /// Lease is renewed every quarter of it. Longer leases mean fewer writes
    /// from edge nodes on slow links.
    #[arg(long, value_name = "SECONDS", default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub node_lease_duration_seconds: u64,

    /// The node's first crash-loop back-off (e.g. 1s, 500ms); it doubles
    /// after each crash up to --max-container-restart-period.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = flags::parse_positive_duration)]
    pub container_restart_initial_backoff: Duration,

    /// The node's longest crash-loop back-off (the kubelet's
    /// maxContainerRestartPeriod); a container that ran twice this long
    /// starts over at the first back-off.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = flags::parse_positive_duration)]
    pub max_container_restart_period: Duration,

    /// Size at which a container's log file is rotated (e.g. 10Mi); at most
    /// twice this is kept per container run.
    #[arg(long, value_name = "QUANTITY", default_value = "10Mi", value_parser = flags::parse_size)]
    pub container_log_max_size: u64,

    /// PEM bundle of extra CAs the node trusts for HTTPS registries
    /// (registries on loopback are reached over plain HTTP).
    #[arg(long, value_name = "FILE")]
    pub registry_ca: Option<PathBuf>,

    /// Size the node's module cache is kept under (e.g. 2Gi); modules no
    /// pod uses are evicted least recently used first.
    #[arg(long, value_name = "QUANTITY", default_value = "2Gi", value_parser = flags::parse_size)]
    pub module_cache_max_size: u64,

    /// Size the node's cache of compiled modules is kept under (e.g.
    /// 512Mi), so restarts load machine code instead of compiling; the
    /// least recently used are evicted first.
    #[arg(long, value_name = "QUANTITY", default_value = "1Gi", value_parser = flags::parse_size)]
    pub compiled_cache_max_size: u64,

    /// How many image pulls the node runs at once (the kubelet's
    /// maxParallelImagePulls).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_parallel_image_pulls: u16,

    /// A directory below which the node may mount hostPath volumes
    /// (repeatable; judged after resolving symlinks). Without it every
    /// hostPath volume is refused.
    #[arg(long = "allow-host-path", value_name = "DIR")]
    pub allow_host_path: Vec<PathBuf>,

    /// Wasm instance allocation: `auto` reserves a pool of instance slots
    /// up front (fastest start; falls back to on-demand, with a warning,
    /// when the address space is too small), `off` allocates on demand —
    /// for emulators such as qemu-user, where the reservation costs real
    /// memory.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = Pooling::Auto)]
    pub wasm_pooling: Pooling,

    /// How many pods the node takes (its `pods` capacity, the kubelet's
    /// --max-pods); the pooling allocator reserves four instance slots per
    /// pod, so a large value makes the node allocate on demand instead.
    #[arg(long, value_name = "N", default_value_t = 110, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_pods: u32,
}

/// `--wasm-pooling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pooling {
    Auto,
    Off,
}

impl KubeletArgs {
    /// The node Lease's `leaseDurationSeconds`.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.node_lease_duration_seconds)
    }

    /// How often the Lease is renewed: a quarter of its duration, as the
    /// kubelet does, so three renewals may fail before it lapses.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration() / 4
    }

    /// The crash-loop back-off these flags ask for.
    pub fn restart_backoff(&self) -> wasmkube_runtime::status::RestartBackoff {
        wasmkube_runtime::status::RestartBackoff::new(
            self.container_restart_initial_backoff,
            self.max_container_restart_period,
        )
    }

    /// Writes these settings into a kubelet configuration.
    pub fn configure(&self, config: &mut wasmkube_runtime::KubeletConfig) {
        config.port = self.kubelet_port;
        config.proxy_port = self.proxy_port;
        config.lease_duration = self.lease_duration();
        config.renew_interval = self.renew_interval();
        config.restart_backoff = self.restart_backoff();
        config.max_log_bytes = self.container_log_max_size;
        config.registry_ca = self.registry_ca.clone();
        config.module_cache_max_bytes = self.module_cache_max_size;
        config.compiled_cache_max_bytes = self.compiled_cache_max_size;
        config.max_parallel_image_pulls = usize::from(self.max_parallel_image_pulls);
        config.allowed_host_paths = self.allow_host_path.clone();
        config.pooling = self.wasm_pooling == Pooling::Auto;
        config.max_pods = self.max_pods;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        kubelet: KubeletArgs,
    }

    fn parse(args: &[&str]) -> Result<KubeletArgs, clap::Error> {
        let mut all = vec!["x"];
        all.extend(args);
        Cmd::try_parse_from(all).map(|c| c.kubelet)
    }

    #[test]
    fn defaults_match_the_kubelet_config_defaults() -> anyhow::Result<()> {
        let a = parse(&[])?;
        let mut config = wasmkube_runtime::KubeletConfig::new("n", "/tmp/n");
        let untouched = config.clone();
        a.configure(&mut config);
        assert_eq!(config.port, 10250);
        assert_eq!(config.proxy_port, 8080);
        assert_eq!(config.lease_duration, untouched.lease_duration);
        assert_eq!(config.renew_interval, untouched.renew_interval);
        assert_eq!(config.restart_backoff, untouched.restart_backoff);
        assert_eq!(config.max_log_bytes, untouched.max_log_bytes);
        assert!(config.allowed_host_paths.is_empty());
        assert_eq!(config.registry_ca, None);
        assert!(config.pooling);
        assert_eq!(config.max_pods, untouched.max_pods);
        Ok(())
    }

    #[test]
    fn lease_duration_sets_the_renew_interval_to_a_quarter() -> anyhow::Result<()> {
        let a = parse(&["--node-lease-duration-seconds", "120"])?;
        let mut config = wasmkube_runtime::KubeletConfig::new("n", "/tmp/n");
        a.configure(&mut config);
        assert_eq!(config.lease_duration, Duration::from_secs(120));
        assert_eq!(config.renew_interval, Duration::from_secs(30));
        // A one-second lease renews every 250 ms rather than never.
        let a = parse(&["--node-lease-duration-seconds=1"])?;
        assert_eq!(a.renew_interval(), Duration::from_millis(250));
        for bad in ["0", "-5", "soon", "86401"] {
            assert!(
                parse(&["--node-lease-duration-seconds", bad]).is_err(),
                "{bad:?} is rejected"
            );
        }
        Ok(())
    }

    #[test]
    fn every_flag_reaches_the_kubelet_config() -> anyhow::Result<()> {
        let a = parse(&[
            "--kubelet-port",
            "0",
            "--proxy-port=18080",
            "--container-restart-initial-backoff",
            "1s",
            "--max-container-restart-period",
            "30s",
            "--container-log-max-size",
            "1Mi",
            "--registry-ca",
            "/ca.pem",
            "--module-cache-max-size",
            "100Mi",
            "--compiled-cache-max-size",
            "50Mi",
            "--max-parallel-image-pulls",
            "1",
            "--allow-host-path",
            "/srv",
            "--wasm-pooling=off",
            "--max-pods=10000",
        ])?;
        let mut config = wasmkube_runtime::KubeletConfig::new("n", "/tmp/n");
        a.configure(&mut config);
        assert_eq!(config.port, 0);
        assert_eq!(config.proxy_port, 18080);
        assert_eq!(config.restart_backoff.initial, Duration::from_secs(1));
        assert_eq!(config.restart_backoff.max, Duration::from_secs(30));
        assert_eq!(config.max_log_bytes, 1 << 20);
        assert_eq!(config.registry_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(config.module_cache_max_bytes, 100 << 20);
        assert_eq!(config.compiled_cache_max_bytes, 50 << 20);
        assert_eq!(config.max_parallel_image_pulls, 1);
        assert_eq!(config.allowed_host_paths, [PathBuf::from("/srv")]);
        assert!(!config.pooling);
        assert_eq!(config.max_pods, 10_000);
        assert!(parse(&["--wasm-pooling", "sometimes"]).is_err());
        assert!(parse(&["--max-pods", "0"]).is_err());
        Ok(())
    }
}

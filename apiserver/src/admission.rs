//! Admission: what runs on every create and update after the kind's
//! defaults and before the object is stored, as Kubernetes' admission
//! chain does. Mutating plugins first ([`Admission::mutate`]: LimitRange
//! defaults, ResourceQuota status on its own writes), then, after the
//! object validated, validating ones ([`Admission::validate`]: the node
//! pod policy, LimitRange bounds, ResourceQuota).
//!
//! Plugins:
//! - [`limitrange`]: `LimitRange` `default`/`defaultRequest` filled into a
//!   new pod's containers; `min`, `max`, `maxLimitRequestRatio` of
//!   Container and Pod items enforced (403).
//! - [`podpolicy`]: the server's node-level policy: hostPath volumes only
//!   below `--allow-host-path` directories, `--max-pod-memory` and
//!   `--max-pod-cpu` as the largest limits a pod may have (403); pod
//!   templates of workloads get the same findings as warnings, as
//!   Kubernetes' Pod Security admission does.
//! - [`quota`]: `ResourceQuota` charged at create (and by what an update
//!   adds) with a `resourceVersion` precondition on the quota's status, so
//!   concurrent creates never admit more than the quota holds, and the
//!   quota controller that recomputes `status.used` (on removals and
//!   periodically) and frees what deleted objects held.
//!
//! Each plugin reads what it needs through the [`Registry`]; the chain
//! itself holds only the policy and the quota bookkeeping.

pub mod limitrange;
pub mod podpolicy;
pub mod quota;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::StatusDetails;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wasmkube_api::resources::ResourceInfo;
use wasmkube_api::status;

use crate::error::{ApiError, Result};
use crate::registry::Registry;

/// The server's admission policy (`wasmkube server` flags).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Directories below which pods may mount hostPath volumes
    /// (`--allow-host-path`); empty: hostPath volumes are refused.
    pub allowed_host_paths: Vec<PathBuf>,
    /// Largest memory limit of one pod in bytes (`--max-pod-memory`).
    pub max_pod_memory: Option<u64>,
    /// Largest CPU limit of one pod in millicores (`--max-pod-cpu`).
    pub max_pod_cpu: Option<u64>,
    /// How often the quota controller recomputes every quota's usage even
    /// when nothing was removed (a safety net, as Kubernetes' resync).
    pub quota_resync: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_host_paths: Vec::new(),
            max_pod_memory: None,
            max_pod_cpu: None,
            quota_resync: Duration::from_secs(30),
        }
    }
}

/// What kind of write is being admitted.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    Create,
    /// An update of the main resource or (`status: true`) of its status;
    /// `old` is the stored object.
    Update {
        old: &'a Value,
        status: bool,
    },
}

impl Operation<'_> {
    fn old(&self) -> Option<&Value> {
        match self {
            Operation::Create => None,
            Operation::Update { old, .. } => Some(old),
        }
    }
}

/// The admission chain of one registry.
#[derive(Debug, Default)]
pub struct Admission {
    policy: Policy,
    quota: quota::QuotaState,
}

/// Proof that an object was admitted. Kept until the object is stored:
/// while any is alive, the quota controller does not recompute usage, so
/// it never misses an object that was charged but not yet written.
#[derive(Debug)]
#[must_use = "hold it until the object is stored"]
pub struct Admitted {
    _charged: Option<tokio::sync::OwnedRwLockReadGuard<()>>,
}

impl Admission {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            quota: quota::QuotaState::default(),
        }
    }

    /// The policy this chain enforces.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Mutating admission: runs after the kind's defaults, before
    /// validation.
    pub async fn mutate(
        &self,
        reg: &Registry,
        res: &ResourceInfo,
        namespace: Option<&str>,
        obj: &mut Value,
        op: Operation<'_>,
    ) -> Result<()> {
        let Some(ns) = namespace.filter(|_| res.namespaced) else {
            return Ok(());
        };
        if is_core(res, "Pod") && matches!(op, Operation::Create) {
            limitrange::apply_defaults(reg, ns, obj).await?;
        }
        if is_core(res, "ResourceQuota") {
            match op {
                Operation::Create => quota::initial_status(reg, ns, obj).await?,
                Operation::Update { old, status: false } => {
                    quota::refresh_status(reg, ns, old, obj).await?
                }
                Operation::Update { status: true, .. } => {}
            }
        }
        Ok(())
    }

    /// Validating admission: runs once the object passed validation, before
    /// it is stored. `dry_run` checks quotas without charging them.
    #[allow(clippy::too_many_arguments)]
    pub async fn validate(
        &self,
        reg: &Registry,
        res: &ResourceInfo,
        namespace: Option<&str>,
        obj: &Value,
        op: Operation<'_>,
        dry_run: bool,
        warnings: &mut Vec<String>,
    ) -> Result<Admitted> {
        let Some(ns) = namespace.filter(|_| res.namespaced) else {
            return Ok(Admitted { _charged: None });
        };
        let name = crate::registry::object::name(obj);
        if matches!(op, Operation::Create) {
            if is_core(res, "Pod") {
                let mut refused = podpolicy::check_pod(&self.policy, obj);
                refused.extend(limitrange::violations(reg, ns, obj).await?);
                if !refused.is_empty() {
                    return Err(forbidden(res, name, &refused));
                }
            } else if let Some(spec) = podpolicy::template_spec(res, obj) {
                for finding in podpolicy::check_spec(&self.policy, spec) {
                    warnings.push(format!(
                        "pods created from this {} would be refused: {finding}",
                        res.kind
                    ));
                }
            }
        }
        let charged = self
            .quota
            .admit(reg, res, ns, name, obj, op.old(), dry_run)
            .await?;
        Ok(Admitted { _charged: charged })
    }

    /// An object of `res` left the store: quotas counting it are
    /// recomputed soon.
    pub fn removed(&self, res: &ResourceInfo) {
        if res.namespaced && !is_core(res, "Event") {
            self.quota.wake();
        }
    }

    /// Starts the quota controller of `reg` (stops with `shutdown`).
    pub fn spawn_quota_controller(reg: &Arc<Registry>, shutdown: CancellationToken) {
        quota::spawn_controller(reg, shutdown);
    }
}

fn is_core(res: &ResourceInfo, kind: &str) -> bool {
    res.group.is_empty() && res.kind == kind
}

/// `deployments.apps`, `pods`: how Kubernetes names a resource in
/// admission messages.
fn qualified(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

/// Kubernetes' admission refusal: 403 Forbidden, `pods "web" is forbidden:
/// <reason>`, several reasons as `[a, b]`.
pub fn forbidden(res: &ResourceInfo, name: &str, reasons: &[String]) -> ApiError {
    let reason = match reasons {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let mut s = status::forbidden(format!(
        "{} {name:?} is forbidden: {reason}",
        qualified(res)
    ));
    s.details = Some(StatusDetails {
        name: (!name.is_empty()).then(|| name.to_string()),
        group: (!res.group.is_empty()).then(|| res.group.to_string()),
        kind: Some(res.plural.to_string()),
        ..Default::default()
    });
    ApiError(s)
}

/// The objects of `res` in `namespace`, from the watch cache when it is
/// current, else from the store.
async fn objects(reg: &Registry, res: &ResourceInfo, namespace: &str) -> Result<Vec<Value>> {
    if let Some(list) = reg.cached_objects(res, Some(namespace)) {
        return Ok(list.into_iter().map(|o| (*o).clone()).collect());
    }
    reg.stored_objects(res, Some(namespace)).await
}

fn core_resource(plural: &str) -> Result<&'static ResourceInfo> {
    wasmkube_api::resources::by_plural("", "v1", plural)
        .ok_or_else(|| ApiError::internal(format!("resource {plural} is not served")))
}

/// Parses `--max-pod-memory` (a quantity) into bytes.
pub fn parse_memory_flag(input: &str) -> std::result::Result<u64, String> {
    let millis = wasmkube_api::rules::quota::parse_millis(input)
        .ok_or_else(|| format!("{input:?} is not a quantity (e.g. 512Mi, 2Gi)"))?;
    u64::try_from(millis.div_euclid(1000) + i128::from(millis.rem_euclid(1000) != 0))
        .ok()
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{input:?} must be more than 0"))
}

/// Parses `--max-pod-cpu` (a quantity) into millicores.
pub fn parse_cpu_flag(input: &str) -> std::result::Result<u64, String> {
    let millis = wasmkube_api::rules::quota::parse_millis(input)
        .ok_or_else(|| format!("{input:?} is not a quantity (e.g. 2, 500m)"))?;
    u64::try_from(millis)
        .ok()
        .filter(|m| *m > 0)
        .ok_or_else(|| format!("{input:?} must be more than 0"))
}

//! The LimitRanger plugin: a namespace's `LimitRange` objects give new pods
//! default requests and limits, and bound what a container or a whole pod
//! may ask for. The rules themselves are pure and live in
//! [`wasmkube_api::rules::quota`]; this reads the namespace's LimitRanges.

use serde_json::Value;
use wasmkube_api::rules::quota::{self, LimitItems};

use super::{core_resource, objects};
use crate::error::Result;
use crate::registry::Registry;

async fn ranges(reg: &Registry, namespace: &str) -> Result<Vec<LimitItems>> {
    let res = core_resource("limitranges")?;
    let mut list: Vec<LimitItems> = objects(reg, res, namespace)
        .await?
        .iter()
        .map(LimitItems::of)
        .collect();
    // Several LimitRanges apply in name order, the first default winning,
    // so the outcome does not depend on the order the store lists them.
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// Fills the LimitRange defaults into a new pod.
pub async fn apply_defaults(reg: &Registry, namespace: &str, pod: &mut Value) -> Result<()> {
    let ranges = ranges(reg, namespace).await?;
    if !ranges.is_empty() {
        quota::apply_limit_defaults(pod, &ranges);
    }
    Ok(())
}

/// What in a new pod breaks its namespace's LimitRanges.
pub async fn violations(reg: &Registry, namespace: &str, pod: &Value) -> Result<Vec<String>> {
    let ranges = ranges(reg, namespace).await?;
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    Ok(quota::limit_violations(pod, &ranges))
}

//! Node-placement rules shared by the scheduler and the controllers that
//! place pods themselves (DaemonSets) or evict them (node lifecycle):
//! taint tolerations and node selectors / required node affinity, with
//! Kubernetes' semantics.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, PodSpec, Taint, Toleration};

/// Kubernetes' `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        // An empty key with Equal is invalid in the API; it matches nothing.
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or(&[]);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (value.map(str::parse::<i64>), values) {
            (Some(Ok(v)), [bound]) => match bound.parse::<i64>() {
                Ok(b) if req.operator == "Gt" => v > b,
                Ok(b) => v < b,
                Err(_) => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// A pod spec's `nodeSelector` (every pair must match the node's labels) and
/// `requiredDuringSchedulingIgnoredDuringExecution` node affinity (any term;
/// within a term every expression, and every field requirement on
/// `metadata.name`) against `node`.
pub fn matches_node(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if let Some(selector) = spec.node_selector.as_ref()
        && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let name = node.metadata.name.as_deref();
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
        let fields = term.match_fields.as_deref().unwrap_or(&[]);
        // An empty term matches nothing (Kubernetes semantics).
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| requirement_matches(r, if r.key == "metadata.name" { name } else { None }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn toleration(
        key: Option<&str>,
        op: &str,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn tolerations_match_like_kubernetes() {
        let t = taint("dedicated", Some("edge"), "NoSchedule");
        assert!(tolerates(
            &toleration(Some("dedicated"), "Equal", Some("edge"), None),
            &t
        ));
        assert!(!tolerates(
            &toleration(Some("dedicated"), "Equal", Some("core"), None),
            &t
        ));
        assert!(tolerates(
            &toleration(Some("dedicated"), "Exists", None, Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &toleration(Some("dedicated"), "Exists", None, Some("NoExecute")),
            &t
        ));
        assert!(
            tolerates(&toleration(None, "Exists", None, None), &t),
            "an empty key with Exists tolerates everything"
        );
        assert!(
            !tolerates(&toleration(None, "Equal", None, None), &t),
            "an empty key with Equal matches nothing"
        );
    }

    fn node(name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn required(term: NodeSelectorTerm) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![term],
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn node_selectors_and_required_affinity_match_like_kubernetes() {
        let n = node("n1", &[("zone", "a"), ("cores", "8")]);
        let mut spec = PodSpec {
            node_selector: Some([("zone".to_string(), "a".to_string())].into()),
            ..Default::default()
        };
        assert!(matches_node(&spec, &n));
        spec.node_selector = Some([("zone".to_string(), "b".to_string())].into());
        assert!(!matches_node(&spec, &n));

        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        assert!(matches_node(
            &required(term(vec![req("cores", "Gt", &["4"])], vec![])),
            &n
        ));
        assert!(!matches_node(
            &required(term(vec![req("cores", "Lt", &["4"])], vec![])),
            &n
        ));
        assert!(matches_node(
            &required(term(vec![], vec![req("metadata.name", "In", &["n1"])])),
            &n
        ));
        assert!(!matches_node(
            &required(term(vec![], vec![req("metadata.name", "In", &["n2"])])),
            &n
        ));
        assert!(
            !matches_node(&required(term(vec![], vec![])), &n),
            "an empty term matches nothing"
        );
    }

    #[test]
    fn gt_lt_compare_integers() {
        let r = |op: &str, v: &str| NodeSelectorRequirement {
            key: "k".into(),
            operator: op.into(),
            values: Some(vec![v.into()]),
        };
        assert!(requirement_matches(&r("Gt", "5"), Some("6")));
        assert!(!requirement_matches(&r("Gt", "5"), Some("5")));
        assert!(requirement_matches(&r("Lt", "5"), Some("-1")));
        assert!(!requirement_matches(&r("Lt", "x"), Some("1")));
        assert!(!requirement_matches(&r("Gt", "1"), None));
    }
}

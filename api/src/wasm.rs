//! wasm conventions shared by the apiserver's module store, the kubelet and
//! the CLI: node labels, the module store's paths and JSON shapes, and what a
//! valid digest or tag is.

use serde::{Deserialize, Serialize};

/// `kubernetes.io/os` of a wasmkube node.
pub const NODE_OS: &str = "wasip1";
/// `kubernetes.io/arch` of a wasmkube node.
pub const NODE_ARCH: &str = "wasm32";
/// Node label carrying [`NODE_OS`].
pub const LABEL_OS: &str = "kubernetes.io/os";
/// Node label carrying [`NODE_ARCH`].
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
/// Node label carrying the node's name.
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// Root of the module store HTTP API.
pub const MODULE_API: &str = "/wasmkube/v1";
/// Default largest module accepted.
pub const MAX_MODULE_BYTES: usize = 64 * 1024 * 1024;

/// A stored module tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleInfo {
    /// Module name, a DNS-1123 subdomain (the image repository).
    pub name: String,
    /// The tag the module was pushed as.
    pub tag: String,
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// Size of the module in bytes.
    pub size: u64,
    /// RFC 3339 time the tag was written.
    pub created: String,
}

/// The answer of `/wasmkube/v1/resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedModule {
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// Size of the module in bytes.
    pub size: u64,
}

/// `sha256:` followed by 64 lower-case hex digits.
pub fn is_valid_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A module tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(s: &str) -> bool {
    crate::image::is_valid_tag(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_must_be_lowercase_sha256() {
        let hex = "ab".repeat(32);
        assert!(is_valid_digest(&format!("sha256:{hex}")));
        assert!(!is_valid_digest(&format!("sha256:{}", hex.to_uppercase())));
        assert!(!is_valid_digest(&format!("sha512:{hex}")));
        assert!(!is_valid_digest(&format!("sha256:{}", &hex[1..])));
        assert!(!is_valid_digest(&format!("sha256:{hex}0")));
        assert!(!is_valid_digest(&format!("sha256:{}g", &hex[1..])));
    }

    #[test]
    fn tags_follow_the_docker_grammar() {
        assert!(is_valid_tag("v1"));
        assert!(is_valid_tag("_x.y-z"));
        assert!(is_valid_tag(&"a".repeat(128)));
        assert!(!is_valid_tag(&"a".repeat(129)));
        assert!(!is_valid_tag(""));
        assert!(!is_valid_tag(".v1"));
        assert!(!is_valid_tag("v/1"));
    }

    #[test]
    fn module_info_is_camel_case_json() {
        let m = ModuleInfo {
            name: "hello".into(),
            tag: "v1".into(),
            digest: "sha256:x".into(),
            size: 3,
            created: "t".into(),
        };
        let v = serde_json::to_value(&m).ok();
        assert_eq!(
            v,
            Some(
                serde_json::json!({"name": "hello", "tag": "v1", "digest": "sha256:x", "size": 3, "created": "t"})
            )
        );
    }
}

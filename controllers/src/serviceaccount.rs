//! ServiceAccount controller: every active namespace has a ServiceAccount
//! named `default`, as Kubernetes' serviceaccounts-controller ensures.
//! Pods that name no account run as it, and `kubectl create token default`
//! works in any namespace. A deleted `default` account is created again
//! (with a new uid, so tokens of the old one stay revoked).
//!
//! Keys are namespace names; both the namespace and its ServiceAccounts
//! trigger a look.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::framework::{Action, Reconciler};

/// The account every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// How soon to look again when the namespace refused the create for now.
const RETRY_LATER: Duration = Duration::from_secs(5);

/// Errors from the ServiceAccount controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the `default` ServiceAccount failed.
    #[error("creating the default ServiceAccount in {namespace}: {source}")]
    Create {
        /// Namespace it was created in.
        namespace: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// Does `namespace` (from the cache; `None` when gone) need its `default`
/// account created? Only when it exists, is not terminating and has none.
pub fn needs_default(namespace: Option<&Namespace>, has_default: bool) -> bool {
    let Some(ns) = namespace else {
        return false;
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Terminating");
    !terminating && !has_default
}

/// The key of a ServiceAccount event: its namespace.
pub fn key_for_service_account(sa: &ServiceAccount) -> Option<String> {
    sa.metadata.namespace.clone()
}

/// Keeps a `default` ServiceAccount in every namespace.
pub struct ServiceAccountController {
    client: Client,
    namespaces: Store<Namespace>,
    accounts: Store<ServiceAccount>,
}

impl ServiceAccountController {
    /// A controller reading the two caches and writing through `client`.
    pub fn new(
        client: Client,
        namespaces: Store<Namespace>,
        accounts: Store<ServiceAccount>,
    ) -> Self {
        Self {
            client,
            namespaces,
            accounts,
        }
    }
}

impl Reconciler for ServiceAccountController {
    type Error = Error;

    fn all_keys(&self) -> Vec<String> {
        self.namespaces
            .state()
            .iter()
            .filter_map(|ns| ns.metadata.name.clone())
            .collect()
    }

    async fn reconcile(&mut self, key: &str) -> Result<Action, Error> {
        let namespace = self.namespaces.get(&ObjectRef::new(key));
        let has_default = self
            .accounts
            .get(&ObjectRef::new(DEFAULT_SERVICE_ACCOUNT).within(key))
            .is_some();
        if !needs_default(namespace.as_deref(), has_default) {
            return Ok(Action::AwaitChange);
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.to_string()),
                namespace: Some(key.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), key);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {
                tracing::info!(namespace = key, "created the default ServiceAccount");
                Ok(Action::AwaitChange)
            }
            // Someone (or our previous pass, ahead of the cache) made it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::AwaitChange),
            // The namespace went away or began terminating meanwhile; its
            // own event brings the key back if that changes.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {
                tracing::debug!(namespace = key, reason = %s.message, "default ServiceAccount not created");
                Ok(Action::Requeue(RETRY_LATER))
            }
            Err(source) => Err(Error::Create {
                namespace: key.to_string(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ns(phase: Option<&str>, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("team".into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            status: phase.map(|p| NamespaceStatus {
                phase: Some(p.into()),
                ..NamespaceStatus::default()
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn only_live_namespaces_without_one_get_a_default_account() {
        assert!(needs_default(Some(&ns(Some("Active"), false)), false));
        assert!(needs_default(Some(&ns(None, false)), false));
        assert!(!needs_default(Some(&ns(Some("Active"), false)), true));
        assert!(!needs_default(Some(&ns(Some("Terminating"), false)), false));
        assert!(!needs_default(Some(&ns(Some("Active"), true)), false));
        assert!(!needs_default(None, false));
    }

    #[test]
    fn account_events_map_to_their_namespace() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("robot".into()),
                namespace: Some("team".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        assert_eq!(key_for_service_account(&sa).as_deref(), Some("team"));
    }
}

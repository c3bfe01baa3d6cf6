//! The storage operations behind the verbs: create, read, list, guaranteed
//! update (update, patch, status), delete (graceful, finalizers) and bind.
//! Everything here speaks `Value` and [`ApiError`]; HTTP lives in `handlers`.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Value, json};
use wasmkube_api::resources::{self, ResourceInfo};
use wasmkube_api::status::{self, FieldCause};
use wasmkube_api::{names, patch, rules};

use super::object::{self, Filter};
use super::request::{BodyType, FieldValidation};
use super::service_alloc::{self, Claimed};
use super::{Registry, collection_prefix, key};
use crate::admission::Operation;
use crate::error::{ApiError, Result};
use crate::storage::{self, KeyValue, Precondition};
use crate::watch_cache::decode_with_revision;

/// How many times a read-modify-write retries after losing a race.
const UPDATE_RETRIES: usize = 8;

/// Options of a create, update or patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_validation: FieldValidation,
}

/// `DeleteOptions` merged from the body and the query.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    /// `Orphan`, `Background` (the default) or `Foreground`. For kinds whose
    /// dependents the garbage collector tracks ([`rules::owns_dependents`]),
    /// Orphan and Foreground become the `orphan` / `foregroundDeletion`
    /// finalizers the collector acts on; elsewhere they act as Background.
    pub propagation_policy: Option<String>,
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (may be empty) over query defaults.
    pub fn from_body(bytes: &[u8], mut base: DeleteOptions) -> Result<DeleteOptions> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(base);
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
            base.grace_period_seconds = Some(g);
        }
        if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
            base.propagation_policy = Some(p.to_string());
        }
        // `orphanDependents` is the deprecated spelling of the same wish.
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && base.propagation_policy.is_none()
        {
            base.propagation_policy = Some("Orphan".to_string());
        }
        if let Some(u) = v.pointer("/preconditions/uid").and_then(Value::as_str) {
            base.precondition_uid = Some(u.to_string());
        }
        if let Some(r) = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            base.precondition_resource_version = Some(r.to_string());
        }
        if v.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"))
        {
            base.dry_run = true;
        }
        Ok(base)
    }
}

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// The result of a patch: the object and whether the patch created it.
#[derive(Debug)]
pub struct Patched {
    pub object: Value,
    pub created: bool,
}

/// Why one attempt of a read-modify-write failed.
/// The object an update attempt starts from.
struct UpdateBase {
    object: Arc<Value>,
    /// Its revision: the write's precondition.
    rev: i64,
    /// Read from the store for this attempt (not the watch cache's copy,
    /// which may be behind).
    fresh: bool,
}

/// The bases of one update's attempts: the watch cache's copy first (when
/// allowed), then the store's, for at most [`UPDATE_RETRIES`] store reads.
struct Attempts {
    try_cache: bool,
    store_reads: usize,
}

impl Attempts {
    fn new(try_cache: bool) -> Self {
        Attempts {
            try_cache,
            store_reads: 0,
        }
    }

    /// The next attempt's base; `None` once the retries are spent.
    async fn next(
        &mut self,
        registry: &Registry,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Result<UpdateBase>> {
        if self.store_reads >= UPDATE_RETRIES {
            return None;
        }
        let base = registry
            .update_base(res, namespace, name, self.try_cache)
            .await;
        self.try_cache = false;
        if base.as_ref().is_ok_and(|b| b.fresh) || base.is_err() {
            self.store_reads += 1;
        }
        Some(base)
    }
}

enum Attempt {
    Failed(Box<ApiError>),
    /// The object changed under us; read it again and retry.
    Raced,
}

impl From<ApiError> for Attempt {
    fn from(e: ApiError) -> Self {
        Attempt::Failed(Box::new(e))
    }
}

fn storage_err<'a>(
    res: &'a ResourceInfo,
    name: &'a str,
) -> impl Fn(storage::Error) -> ApiError + 'a {
    move |e| ApiError::from_storage(e, res.group, res.plural, name)
}

fn conflict(res: &ResourceInfo, name: &str, why: &str) -> ApiError {
    ApiError(status::conflict(res.group, res.plural, name, why))
}

fn invalid(res: &ResourceInfo, name: &str, causes: Vec<FieldCause>) -> ApiError {
    invalid_kind(res.group, res.kind, name, causes)
}

/// 422 Invalid whose message names the kind qualified by its group
/// (`Deployment.apps "web" is invalid: …`), as Kubernetes' `NewInvalid`
/// does with a GroupKind; `details` keep the bare kind and the group.
pub(super) fn invalid_kind(
    group: &str,
    kind: &str,
    name: &str,
    causes: Vec<FieldCause>,
) -> ApiError {
    let mut s = status::invalid(group, kind, name, causes);
    if !group.is_empty()
        && let Some(m) = s.message.as_mut()
        && let Some(rest) = m.strip_prefix(kind)
    {
        *m = format!("{kind}.{group}{rest}");
    }
    ApiError(s)
}

fn patch_error(e: patch::PatchError) -> ApiError {
    match e {
        patch::PatchError::Invalid(m) => ApiError::bad_request(m),
        other => ApiError(status::failure(422, "Invalid", other.to_string())),
    }
}

fn too_deep_cause() -> FieldCause {
    FieldCause::invalid(
        "<root>",
        format!(
            "the object is nested more than {} levels deep",
            patch::MAX_DEPTH
        ),
    )
}

/// Encodes an object for `store.put`. Every write goes through here, so this
/// is where objects too deep to be decoded again (serde_json stops at 128
/// levels) are refused whatever path built them (JSON, patches, protobuf):
/// stored, they would make every read of the kind fail.
fn encode(obj: &Value) -> Result<Bytes> {
    if patch::deeper_than(obj, patch::MAX_DEPTH) {
        return Err(ApiError(status::failure(
            422,
            "Invalid",
            too_deep_cause().message,
        )));
    }
    serde_json::to_vec(&object::without_resource_version(obj))
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(format!("encoding object: {e}")))
}

fn decode_kv(res: &ResourceInfo, kv: &KeyValue) -> Result<Value> {
    decode_with_revision(&kv.value, kv.mod_revision).ok_or_else(|| {
        tracing::error!(key = %kv.key, kind = res.kind, "stored object is not a JSON object");
        ApiError::internal("stored object is corrupt")
    })
}

/// Random suffix of `generateName`, from Kubernetes' alphabet (no vowels, no
/// look-alikes).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// Checks `kind`/`apiVersion` against the URL's resource (filling them in
/// when absent).
fn check_type(res: &ResourceInfo, obj: &mut Value) -> Result<()> {
    let api_version = res.api_version();
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
    let av = o.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != res.kind) || (!av.is_empty() && av != api_version) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({api_version}) \
             or the kind in the data ({kind}) does not match the expected kind ({})",
            res.kind
        )));
    }
    o.insert("kind".into(), Value::String(res.kind.to_string()));
    o.insert("apiVersion".into(), Value::String(api_version));
    Ok(())
}

/// Puts the URL's namespace into the object (400 when the body says otherwise).
fn check_namespace(
    res: &ResourceInfo,
    namespace: Option<&str>,
    obj: &mut Value,
) -> Result<Option<String>> {
    if !res.namespaced {
        object::remove_meta(obj, "namespace");
        return Ok(None);
    }
    let body_ns = object::meta_str(obj, "namespace")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ns = match (namespace, body_ns) {
        (Some(url), Some(body)) if url != body => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        (Some(url), _) => url.to_string(),
        (None, Some(body)) => body,
        (None, None) => {
            return Err(ApiError::bad_request(
                "the namespace of the object is required",
            ));
        }
    };
    object::set_meta(obj, "namespace", Value::String(ns.clone()));
    Ok(Some(ns))
}

/// Unknown fields under `fieldValidation`: Strict fails, Warn returns warnings.
fn check_unknown(
    res: &ResourceInfo,
    obj: &Value,
    mode: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    if mode == FieldValidation::Ignore {
        return Ok(());
    }
    let unknown = rules::unknown_fields(res.kind, obj);
    if unknown.is_empty() {
        return Ok(());
    }
    let msgs: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {:?}", f.trim_start_matches('.')))
        .collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            msgs.join(", ")
        ))),
        _ => {
            warnings.extend(msgs);
            Ok(())
        }
    }
}

/// Metadata and per-kind validation of a full object.
fn validate(res: &ResourceInfo, obj: &Value) -> Vec<FieldCause> {
    // Checked first: the per-kind rules walk the object.
    if patch::deeper_than(obj, patch::MAX_DEPTH) {
        return vec![too_deep_cause()];
    }
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut causes = names::validate_object_meta(&meta, res.namespaced, res.kind);
    for c in rules::validate(res.kind, obj) {
        if !causes.contains(&c) {
            causes.push(c);
        }
    }
    causes
}

/// Defaults the registry owns on top of the per-kind rules: a new pod's
/// status is the server's, whatever the client sent (as Kubernetes' pod
/// strategy does), so it starts Pending with its QoS class.
fn create_defaults(res: &ResourceInfo, obj: &mut Value) {
    rules::defaults(res.kind, obj);
    // Workload status is the controllers' to write: a new one starts empty
    // (Kubernetes' apps strategies `PrepareForCreate`).
    if res.group == "apps"
        && let Some(o) = obj.as_object_mut()
    {
        o.insert("status".into(), json!({}));
    }
    if is_core(res, "Pod") {
        let qos = object::pod_qos_class(obj);
        if let Some(o) = obj.as_object_mut() {
            o.insert(
                "status".into(),
                json!({ "phase": "Pending", "qosClass": qos }),
            );
        }
    }
}

/// Metadata only the server sets, kept from the stored object on every update.
const SYSTEM_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "name",
    "namespace",
];

impl Registry {
    /// Reads one object with its revision; 404 when absent.
    pub(crate) async fn read(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(Value, i64)> {
        let k = key(res, namespace, name);
        match self.store.get(&k).await.map_err(storage_err(res, name))? {
            Some(kv) => Ok((decode_kv(res, &kv)?, kv.mod_revision)),
            None => Err(ApiError::not_found(res.group, res.plural, name)),
        }
    }

    /// Lists `res` under `namespace` (all when `None`) passing `filter`, at
    /// most `limit` items starting after the `continue` token. Returns the
    /// items, the list's revision and the next `continue` token.
    pub(crate) async fn list(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<(Vec<Value>, i64, Option<String>)> {
        let prefix = collection_prefix(res, namespace);
        let (mut start_after, mut revision) = match continue_token {
            Some(t) => {
                let (k, rev) = decode_continue(t)?;
                if !k.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue key is not valid for this list",
                    ));
                }
                self.check_continue_revision(res, rev).await?;
                (Some(k), Some(rev))
            }
            None => (None, None),
        };
        let mut items = Vec::new();
        loop {
            let batch = limit
                .map(|l| l.saturating_sub(items.len()).max(1))
                .unwrap_or(0);
            let page = self
                .store
                .range(&prefix, start_after.as_deref(), batch)
                .await
                .map_err(storage_err(res, ""))?;
            // The oldest read is the list's revision: a watch from it replays
            // whatever the later pages might already include, never less.
            let rev = *revision.get_or_insert(page.revision);
            let mut last_key = None;
            for kv in &page.kvs {
                last_key = Some(kv.key.clone());
                let obj = decode_kv(res, kv)?;
                if filter.matches(res.kind, &obj) {
                    items.push(obj);
                }
            }
            let full = limit.is_some_and(|l| items.len() >= l);
            if !page.more || last_key.is_none() {
                return Ok((items, rev, None));
            }
            if full {
                return Ok((items, rev, last_key.map(|k| encode_continue(&k, rev))));
            }
            start_after = last_key;
        }
    }

    /// The revision of a `continue` token is echoed as the list's
    /// resourceVersion, which clients watch from: it must be one this store
    /// has had (400 otherwise, as Kubernetes answers a token it cannot have
    /// issued) and still has history for (410, as etcd's compaction makes
    /// Kubernetes answer).
    async fn check_continue_revision(&self, res: &ResourceInfo, rev: i64) -> Result<()> {
        let current = self
            .store
            .current_revision()
            .await
            .map_err(storage_err(res, ""))?;
        if rev > current {
            return Err(ApiError::bad_request(
                "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        let compacted = self
            .store
            .compacted_revision()
            .await
            .map_err(storage_err(res, ""))?;
        if rev < compacted {
            return Err(ApiError(status::failure(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            )));
        }
        Ok(())
    }

    /// Creates an object (POST, apply-create, bootstrap).
    pub(crate) async fn create_object(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        check_type(res, &mut obj)?;
        let ns = check_namespace(res, namespace, &mut obj)?;
        check_unknown(res, &obj, opts.field_validation, warnings)?;
        for f in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            object::remove_meta(&mut obj, f);
        }
        create_defaults(res, &mut obj);
        if obj.get("spec").is_some() {
            object::set_meta(&mut obj, "generation", json!(1));
        } else {
            object::remove_meta(&mut obj, "generation");
        }
        let generate = object::meta_str(&obj, "generateName")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let fixed_name = !object::name(&obj).is_empty();
        if !fixed_name && generate.is_none() {
            return Err(invalid(
                res,
                "",
                vec![FieldCause::required("metadata.name")],
            ));
        }
        if let Some(ns) = ns.as_deref() {
            self.check_namespace_open(ns).await?;
        }
        let attempts = if fixed_name { 1 } else { 5 };
        let uid = uuid::Uuid::new_v4().to_string();
        for attempt in 0..attempts {
            // Each attempt starts afresh: the create strategy below may derive
            // fields from the name (a Job's `job-name` label).
            let mut obj = obj.clone();
            if !fixed_name && let Some(g) = &generate {
                object::set_meta(
                    &mut obj,
                    "name",
                    Value::String(format!("{g}{}", random_suffix())),
                );
            }
            object::set_meta(&mut obj, "uid", Value::String(uid.clone()));
            // Named and with its uid: what the kind's create strategy needs
            // (a Job's selector is generated from its uid).
            rules::prepare_create(res.kind, &mut obj);
            // Admission: mutating plugins before validation, validating
            // ones after; `_admitted` lives until the object is stored.
            self.admission
                .mutate(self, res, ns.as_deref(), &mut obj, Operation::Create)
                .await?;
            let name = object::name(&obj).to_string();
            let causes = validate(res, &obj);
            if !causes.is_empty() {
                return Err(invalid(res, &name, causes));
            }
            let _admitted = self
                .admission
                .validate(
                    self,
                    res,
                    ns.as_deref(),
                    &obj,
                    Operation::Create,
                    opts.dry_run,
                    warnings,
                )
                .await?;
            object::set_meta(&mut obj, "creationTimestamp", Value::String(object::now()));
            if opts.dry_run {
                return Ok(obj);
            }
            let k = key(res, ns.as_deref(), &name);
            // ClusterIPs and node ports are claimed before the Service is
            // written and freed again when it is not.
            let claimed = if is_core(res, "Service") {
                service_alloc::allocate(&*self.store, &mut obj, None).await?
            } else {
                Claimed::default()
            };
            let encoded = match encode(&obj) {
                Ok(b) => b,
                Err(e) => {
                    claimed.release(&*self.store).await;
                    return Err(e);
                }
            };
            match self
                .store
                .put(&k, encoded, Precondition::MustNotExist)
                .await
            {
                Ok(kv) => {
                    self.wrote(res, kv.mod_revision);
                    object::set_resource_version(&mut obj, kv.mod_revision);
                    return Ok(obj);
                }
                Err(storage::Error::AlreadyExists { .. }) if attempt + 1 < attempts => {
                    claimed.release(&*self.store).await;
                    continue;
                }
                Err(e) => {
                    claimed.release(&*self.store).await;
                    return Err(storage_err(res, &name)(e));
                }
            }
        }
        Err(ApiError::internal("could not generate a unique name"))
    }

    /// 404 when the namespace is missing, 403 when it is terminating.
    async fn check_namespace_open(&self, ns: &str) -> Result<()> {
        let Some(ns_res) = resources::by_plural("", "v1", "namespaces") else {
            return Ok(());
        };
        // From the watch cache when it holds the namespace, as Kubernetes'
        // NamespaceLifecycle admission reads its informer; a miss (a
        // namespace created through another API server a moment ago) reads
        // the store.
        let nsobj = match self.cached_object(ns_res, None, ns) {
            Some(cached) => cached,
            None => Arc::new(self.read(ns_res, None, ns).await?.0),
        };
        if object::meta(&nsobj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Err(ApiError(status::failure(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            )));
        }
        Ok(())
    }

    /// Read-modify-write with retries (Kubernetes' GuaranteedUpdate): `mutate`
    /// turns the current object into the desired one; the part rules, system
    /// metadata, validation and generation are applied here. A result equal to
    /// the stored object is not written (its resourceVersion stays).
    pub(crate) async fn guaranteed_update<F>(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        part: Part,
        opts: &WriteOptions,
        mut mutate: F,
    ) -> Result<Value>
    where
        F: FnMut(&Value, i64) -> Result<Value>,
    {
        // The first attempt may start from the watch cache's copy; dry runs
        // (nothing checks their base) and Services (their updates claim
        // addresses in the store first) always read the store.
        let mut attempts = Attempts::new(!opts.dry_run && !is_core(res, "Service"));
        while let Some(base) = attempts.next(self, res, namespace, name).await {
            let base = base?;
            let desired = match mutate(&base.object, base.rev) {
                Ok(d) => d,
                // Perhaps only because the cached copy is behind.
                Err(_) if !base.fresh => continue,
                Err(e) => return Err(e),
            };
            match self
                .commit_update(res, namespace, name, &base, desired, part, opts)
                .await
            {
                Ok(v) => return Ok(v),
                Err(Attempt::Failed(_)) if !base.fresh => continue,
                Err(Attempt::Failed(e)) => return Err(*e),
                Err(Attempt::Raced) => continue,
            }
        }
        Err(conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ))
    }

    /// What an update starts from: the watch cache's copy of the object
    /// when `try_cache` and the cache holds it (no store read, as
    /// kube-apiserver's GuaranteedUpdate starts from the cacher's copy),
    /// else the store's. A write from a cached base is checked against the
    /// store's revision like any other; a cached base that is behind makes
    /// it fail, and the caller retries from the store.
    async fn update_base(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        try_cache: bool,
    ) -> Result<UpdateBase> {
        if try_cache
            && let Some(object) = self.cached_object(res, namespace, name)
            && let Some(rev) =
                object::meta_str(&object, "resourceVersion").and_then(|s| s.parse::<i64>().ok())
        {
            return Ok(UpdateBase {
                object,
                rev,
                fresh: false,
            });
        }
        let (object, rev) = self.read(res, namespace, name).await?;
        Ok(UpdateBase {
            object: Arc::new(object),
            rev,
            fresh: true,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_update(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        base: &UpdateBase,
        desired: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Value, Attempt> {
        let current = &*base.object;
        let mut new = match part {
            Part::Main => rules::prepare_update(res.kind, current, &desired),
            Part::Status => rules::prepare_status_update(res.kind, current, &desired),
        };
        if !new.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object").into());
        }
        let old_meta = object::meta(current).cloned().unwrap_or_default();
        for f in SYSTEM_META {
            match old_meta.get(*f) {
                Some(v) => object::set_meta(&mut new, f, v.clone()),
                None => {
                    object::remove_meta(&mut new, f);
                }
            }
        }
        if let Some(o) = new.as_object_mut() {
            o.insert("kind".into(), json!(res.kind));
            o.insert("apiVersion".into(), json!(res.api_version()));
        }
        rules::defaults(res.kind, &mut new);
        let op = Operation::Update {
            old: current,
            status: part == Part::Status,
        };
        self.admission
            .mutate(self, res, namespace, &mut new, op)
            .await?;
        let mut causes = validate(res, &new);
        for c in rules::validate_update(res.kind, current, &new) {
            if !causes.contains(&c) {
                causes.push(c);
            }
        }
        if !causes.is_empty() {
            return Err(invalid(res, name, causes).into());
        }
        // Held until the update is stored (see `admission::Admitted`).
        let _admitted = self
            .admission
            .validate(
                self,
                res,
                namespace,
                &new,
                op,
                opts.dry_run,
                &mut Vec::new(),
            )
            .await?;
        // An update may need new node ports (a type or port change) or a
        // ClusterIP (from ExternalName); what it drops is freed once stored.
        let claimed = if is_core(res, "Service") && part == Part::Main && !opts.dry_run {
            service_alloc::allocate(&*self.store, &mut new, Some(current)).await?
        } else {
            Claimed::default()
        };
        let result = self
            .store_update(res, namespace, name, base, new, part, opts)
            .await;
        match result {
            Ok((stored, removed)) => {
                if is_core(res, "Service") && !opts.dry_run {
                    // Every claim is held by the stored object now.
                    drop(claimed);
                    if removed {
                        service_alloc::release_all(&*self.store, current).await;
                        service_alloc::release_all(&*self.store, &stored).await;
                    } else {
                        service_alloc::release_dropped(&*self.store, current, &stored).await;
                    }
                }
                Ok(stored)
            }
            Err(e) => {
                claimed.release(&*self.store).await;
                Err(e)
            }
        }
    }

    /// The generation, no-op detection and the write of
    /// [`Self::commit_update`]; `true` when the write removed the object
    /// (its last finalizer went).
    #[allow(clippy::too_many_arguments)]
    async fn store_update(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        base: &UpdateBase,
        mut new: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<(Value, bool), Attempt> {
        let (current, rev) = (&*base.object, base.rev);
        let old_meta = object::meta(current).cloned().unwrap_or_default();
        let old_gen = old_meta.get("generation").and_then(Value::as_i64);
        match old_gen {
            // Status writes never move the generation (their strategies in
            // Kubernetes leave it alone), even when they carry annotations.
            Some(g) if part == Part::Main && rules::spec_changed(res.kind, current, &new) => {
                object::set_meta(&mut new, "generation", json!(g + 1))
            }
            Some(g) => object::set_meta(&mut new, "generation", json!(g)),
            None => {
                object::remove_meta(&mut new, "generation");
            }
        }
        let stripped = object::without_resource_version(&new);
        if stripped == object::without_resource_version(current) {
            // Nothing to write, unless the copy it was compared with is
            // behind the store: then compare with the store's.
            if !base.fresh {
                return Err(Attempt::Raced);
            }
            return Ok((current.clone(), false));
        }
        let k = key(res, namespace, name);
        // The update that removes the last finalizer of a deleted object deletes it.
        if old_meta.contains_key("deletionTimestamp")
            && !object::has_finalizers(&new)
            && !is_pending_graceful(res, &new)
            && !is_core(res, "Namespace")
        {
            if opts.dry_run {
                return Ok((new, false));
            }
            return match self.store.delete(&k, Precondition::ModRevision(rev)).await {
                Ok((_, del_rev)) => {
                    self.wrote(res, del_rev);
                    object::set_resource_version(&mut new, del_rev);
                    self.after_removal(res, namespace).await;
                    Ok((new, true))
                }
                Err(storage::Error::Conflict { .. }) => Err(Attempt::Raced),
                Err(e) => Err(storage_err(res, name)(e).into()),
            };
        }
        if opts.dry_run {
            object::set_resource_version(&mut new, rev);
            return Ok((new, false));
        }
        match self
            .store
            .put(&k, encode(&stripped)?, Precondition::ModRevision(rev))
            .await
        {
            Ok(kv) => {
                self.wrote(res, kv.mod_revision);
                object::set_resource_version(&mut new, kv.mod_revision);
                Ok((new, false))
            }
            Err(storage::Error::Conflict { .. } | storage::Error::NotFound { .. }) => {
                Err(Attempt::Raced)
            }
            Err(e) => Err(storage_err(res, name)(e).into()),
        }
    }

    /// PUT of a full object (main resource or `status`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn update_object(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        mut obj: Value,
        part: Part,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        check_type(res, &mut obj)?;
        check_namespace(res, namespace, &mut obj)?;
        let body_name = object::name(&obj);
        if body_name.is_empty() {
            object::set_meta(&mut obj, "name", Value::String(name.to_string()));
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        check_unknown(res, &obj, opts.field_validation, warnings)?;
        let precondition =
            match object::meta_str(&obj, "resourceVersion").filter(|s| !s.is_empty()) {
                Some(s) => Some(s.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion: {s:?}"))
                })?),
                None => None,
            };
        self.guaranteed_update(res, namespace, name, part, opts, |_, rev| {
            if precondition.is_some_and(|p| p != rev) {
                return Err(conflict(
                    res,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
            Ok(obj.clone())
        })
        .await
    }

    /// PATCH of any supported type; server-side apply creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn patch_object(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        ty: BodyType,
        patch_doc: Value,
        part: Part,
        opts: &WriteOptions,
        warnings: &mut Vec<String>,
    ) -> Result<Patched> {
        if ty == BodyType::ApplyPatch {
            if !patch_doc.is_object() {
                return Err(ApiError::bad_request("an apply patch must be an object"));
            }
            let applied_name = object::name(&patch_doc);
            if !applied_name.is_empty() && applied_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({applied_name}) does not match the name on the URL ({name})"
                )));
            }
            if part == Part::Main {
                match self.read(res, namespace, name).await {
                    Err(e) if e.code() == 404 => {
                        let mut obj = patch_doc.clone();
                        object::set_meta(&mut obj, "name", Value::String(name.to_string()));
                        let object = self
                            .create_object(res, namespace, obj, opts, warnings)
                            .await?;
                        return Ok(Patched {
                            object,
                            created: true,
                        });
                    }
                    Err(e) => return Err(e),
                    Ok(_) => {}
                }
            }
        }
        let mut seen_warnings = Vec::new();
        let object = self
            .guaranteed_update(res, namespace, name, part, opts, |current, rev| {
                let patched = match ty {
                    BodyType::StrategicMerge => patch::strategic_merge(current, &patch_doc).map_err(patch_error)?,
                    BodyType::MergePatch => patch::merge_patch(current, &patch_doc),
                    BodyType::JsonPatch => patch::json_patch(current, &patch_doc).map_err(patch_error)?,
                    BodyType::ApplyPatch => {
                        patch::server_side_apply(Some(current), &patch_doc).map_err(patch_error)?
                    }
                    BodyType::Json | BodyType::Yaml => {
                        return Err(ApiError(status::unsupported_media_type("application/json")));
                    }
                };
                if !patched.is_object() {
                    return Err(ApiError::bad_request("the patched object is not a JSON object"));
                }
                // A resourceVersion named by the patch is a precondition.
                if let Some(s) = object::meta_str(&patched, "resourceVersion")
                    && s != rev.to_string()
                {
                    return Err(conflict(
                        res,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    ));
                }
                let pk = patched.get("kind").and_then(Value::as_str).unwrap_or(res.kind);
                let pav = patched.get("apiVersion").and_then(Value::as_str).map(str::to_string);
                if pk != res.kind || pav.is_some_and(|a| a != res.api_version()) {
                    return Err(ApiError::bad_request("a patch may not change the kind or apiVersion"));
                }
                seen_warnings.clear();
                check_unknown(res, &patched, opts.field_validation, &mut seen_warnings)?;
                Ok(patched)
            })
            .await?;
        warnings.extend(seen_warnings);
        Ok(Patched {
            object,
            created: false,
        })
    }

    /// DELETE of one object: immediate, graceful (bound pods) or marked
    /// (finalizers). Returns the object as last stored, or as marked.
    pub(crate) async fn delete_object(
        self: &Arc<Self>,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        for _ in 0..UPDATE_RETRIES {
            let (current, rev) = self.read(res, namespace, name).await?;
            let meta = object::meta(&current).cloned().unwrap_or_default();
            if let Some(uid) = &opts.precondition_uid {
                let actual = meta.get("uid").and_then(Value::as_str).unwrap_or("");
                if uid != actual {
                    return Err(conflict(
                        res,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version
                && *rv != rev.to_string()
            {
                return Err(conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {rev}"
                    ),
                ));
            }
            let marked = meta.contains_key("deletionTimestamp");
            let mut current = current;
            if !marked {
                add_propagation_finalizer(res, &mut current, opts.propagation_policy.as_deref())?;
            }
            let finalizers = object::has_finalizers(&current);
            let grace = graceful_period(res, &current, opts.grace_period_seconds);
            let k = key(res, namespace, name);

            let mark = |mut obj: Value, grace: i64| {
                // `grace` comes from the client: saturate instead of overflowing.
                let now = jiff::Timestamp::now();
                let at = now
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or(jiff::Timestamp::MAX);
                object::set_meta(&mut obj, "deletionTimestamp", json!(object::timestamp(at)));
                object::set_meta(&mut obj, "deletionGracePeriodSeconds", json!(grace));
                obj
            };
            let new = if is_core(res, "Namespace") && !marked {
                if !finalizers && self.namespace_is_empty(name).await? {
                    None
                } else {
                    let mut obj = mark(current.clone(), 0);
                    object::set_path(&mut obj, &["status", "phase"], json!("Terminating"));
                    Some(obj)
                }
            } else if marked {
                let current_grace = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                match grace {
                    // Shortening a pending graceful deletion (the kubelet's final
                    // DELETE with 0, or `--force`).
                    Some(g) if g < current_grace => {
                        if g == 0 && !finalizers {
                            None
                        } else {
                            Some(mark(current.clone(), g))
                        }
                    }
                    _ => return Ok(current),
                }
            } else {
                match grace {
                    Some(g) if g > 0 => Some(mark(current.clone(), g)),
                    _ if finalizers => Some(mark(current.clone(), 0)),
                    _ => None,
                }
            };
            if opts.dry_run {
                return Ok(new.unwrap_or(current));
            }
            match new {
                Some(mut obj) => match self
                    .store
                    .put(&k, encode(&obj)?, Precondition::ModRevision(rev))
                    .await
                {
                    Ok(kv) => {
                        self.wrote(res, kv.mod_revision);
                        object::set_resource_version(&mut obj, kv.mod_revision);
                        if is_core(res, "Namespace") {
                            self.spawn_namespace_cleanup(name.to_string());
                        }
                        return Ok(obj);
                    }
                    Err(storage::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_err(res, name)(e)),
                },
                None => match self.store.delete(&k, Precondition::ModRevision(rev)).await {
                    Ok((_, del_rev)) => {
                        self.wrote(res, del_rev);
                        if is_core(res, "Service") {
                            service_alloc::release_all(&*self.store, &current).await;
                        }
                        self.after_removal(res, namespace).await;
                        return Ok(current);
                    }
                    Err(storage::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_err(res, name)(e)),
                },
            }
        }
        Err(conflict(
            res,
            name,
            "the object is being modified too often; try again",
        ))
    }

    async fn namespace_is_empty(&self, ns: &str) -> Result<bool> {
        for res in resources::all().iter().filter(|r| r.namespaced) {
            let page = self
                .store
                .range(&collection_prefix(res, Some(ns)), None, 1)
                .await
                .map_err(storage_err(res, ""))?;
            if !page.kvs.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Deletes everything in a terminating namespace (the namespace
    /// controller's job in Kubernetes): bound pods go through graceful
    /// deletion; the namespace itself goes when the last object does.
    fn spawn_namespace_cleanup(self: &Arc<Self>, ns: String) {
        let reg = self.clone();
        tokio::spawn(async move {
            let shutdown = reg.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = reg.clean_namespace(&ns) => {}
            }
        });
    }

    /// Namespaces left terminating by a previous run finish their cleanup.
    pub(crate) async fn resume_namespace_cleanups(self: &Arc<Self>) {
        let Some(ns_res) = resources::by_plural("", "v1", "namespaces") else {
            return;
        };
        let Ok((items, _, _)) = self
            .list(ns_res, None, &Filter::default(), None, None)
            .await
        else {
            return;
        };
        for ns in items {
            if object::meta(&ns).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                self.spawn_namespace_cleanup(object::name(&ns).to_string());
            }
        }
    }

    async fn clean_namespace(self: &Arc<Self>, ns: &str) {
        for res in resources::all().iter().filter(|r| r.namespaced) {
            let filter = Filter::default();
            let items = match self.list(res, Some(ns), &filter, None, None).await {
                Ok((items, _, _)) => items,
                Err(e) => {
                    tracing::warn!(namespace = ns, resource = res.plural, error = %e, "namespace cleanup: list failed");
                    continue;
                }
            };
            for item in items {
                let name = object::name(&item).to_string();
                if let Err(e) =
                    Box::pin(self.delete_object(res, Some(ns), &name, &DeleteOptions::default()))
                        .await
                    && e.code() != 404
                {
                    tracing::warn!(namespace = ns, name, error = %e, "namespace cleanup: delete failed");
                }
            }
        }
        self.finalize_namespace(ns).await;
    }

    /// Called after an object is removed from the store: a terminating
    /// namespace that became empty is removed too.
    async fn after_removal(&self, res: &ResourceInfo, namespace: Option<&str>) {
        self.admission.removed(res);
        if let (true, Some(ns)) = (res.namespaced, namespace) {
            self.finalize_namespace(ns).await;
        }
    }

    async fn finalize_namespace(&self, ns: &str) {
        let Some(ns_res) = resources::by_plural("", "v1", "namespaces") else {
            return;
        };
        let Ok((nsobj, rev)) = self.read(ns_res, None, ns).await else {
            return;
        };
        let terminating = object::meta(&nsobj).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if !terminating
            || object::has_finalizers(&nsobj)
            || !matches!(self.namespace_is_empty(ns).await, Ok(true))
        {
            return;
        }
        match self
            .store
            .delete(&key(ns_res, None, ns), Precondition::ModRevision(rev))
            .await
        {
            Ok((_, del_rev)) => self.wrote(ns_res, del_rev),
            Err(e) => tracing::debug!(namespace = ns, error = %e, "finalizing namespace"),
        }
    }

    /// `pods/{name}/binding`: assigns the pod to a node once.
    pub(crate) async fn bind(
        &self,
        res: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        binding: &Value,
    ) -> Result<()> {
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return Err(invalid(
                res,
                name,
                vec![FieldCause::required("target.name")],
            ));
        }
        if let Some(k) = binding.pointer("/target/kind").and_then(Value::as_str)
            && !k.is_empty()
            && k != "Node"
        {
            return Err(invalid(
                res,
                name,
                vec![FieldCause::unsupported(
                    "target.kind",
                    "must be empty or Node",
                )],
            ));
        }
        // From the watch cache's copy first, as updates do; a refusal is
        // only given on the store's own state.
        let mut attempts = Attempts::new(true);
        while let Some(base) = attempts.next(self, res, namespace, name).await {
            let base = base?;
            let rev = base.rev;
            let mut pod = Arc::unwrap_or_clone(base.object);
            let deleting = object::meta(&pod).is_some_and(|m| m.contains_key("deletionTimestamp"));
            let bound = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if (deleting || bound) && !base.fresh {
                continue;
            }
            if deleting {
                return Err(conflict(
                    res,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            if let Some(current) = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                return Err(conflict(
                    res,
                    name,
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            object::set_path(&mut pod, &["spec", "nodeName"], json!(node));
            let mut conds = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now()}));
            object::set_path(&mut pod, &["status", "conditions"], Value::Array(conds));
            match self
                .store
                .put(
                    &key(res, namespace, name),
                    encode(&pod)?,
                    Precondition::ModRevision(rev),
                )
                .await
            {
                Ok(kv) => {
                    self.wrote(res, kv.mod_revision);
                    return Ok(());
                }
                Err(storage::Error::Conflict { .. } | storage::Error::NotFound { .. })
                    if !base.fresh =>
                {
                    continue;
                }
                Err(storage::Error::Conflict { .. }) => continue,
                Err(e) => return Err(storage_err(res, name)(e)),
            }
        }
        Err(conflict(
            res,
            name,
            "the object is being modified too often; try again",
        ))
    }
}

fn is_core(res: &ResourceInfo, kind: &str) -> bool {
    res.group.is_empty() && res.kind == kind
}

/// The grace period a DELETE gets: only pods bound to a node wait for their
/// kubelet; `None` means "no graceful deletion".
fn graceful_period(res: &ResourceInfo, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if !is_core(res, "Pod") {
        return requested.map(|_| 0);
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return Some(0);
    }
    let g = requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    // Kubernetes' pod strategy (`CheckGracefulDelete`): a negative grace
    // period means "as soon as possible", i.e. 1 s, never a force delete
    // that skips the kubelet.
    Some(if g < 0 { 1 } else { g })
}

/// A pod whose graceful deletion is still pending (its kubelet has not
/// confirmed) stays even when its finalizers are gone.
fn is_pending_graceful(res: &ResourceInfo, obj: &Value) -> bool {
    is_core(res, "Pod")
        && object::meta(obj)
            .and_then(|m| m.get("deletionGracePeriodSeconds"))
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0)
}

fn encode_continue(key: &str, revision: i64) -> String {
    let doc = json!({ "v": "meta.k8s.io/v1", "rv": revision, "start": key });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

fn decode_continue(token: &str) -> Result<(String, i64)> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let key = doc.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let rev = doc.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    if rev <= 0 {
        return Err(ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        ));
    }
    Ok((key.to_string(), rev))
}

/// Turns an Orphan or Foreground `propagationPolicy` into the finalizer the
/// garbage collector acts on, for kinds whose dependents it tracks.
fn add_propagation_finalizer(
    res: &ResourceInfo,
    obj: &mut Value,
    policy: Option<&str>,
) -> Result<()> {
    let finalizer = match policy {
        None | Some("Background") => return Ok(()),
        Some("Orphan") => "orphan",
        Some("Foreground") => "foregroundDeletion",
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {other:?}: must be Orphan, Background or Foreground"
            )));
        }
    };
    if !rules::owns_dependents(res.kind) {
        return Ok(());
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(items) = list.as_array_mut()
        && !items.iter().any(|f| f == finalizer)
    {
        items.push(json!(finalizer));
    }
    Ok(())
}

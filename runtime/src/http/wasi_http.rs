//! wasi:http components: `wasi:http/incoming-handler` served with
//! wasmtime-wasi-http, one instance per request from the cached `ProxyPre`.
//!
//! The instance runs in its own task so it can keep writing the response
//! body after handing over the head; the request's deadline and the
//! container's stop token bound the whole of it. Outgoing requests pass
//! [`Outbound`]: hosts the pod does not list are refused with
//! `HttpRequestDenied`, Service hosts (`<svc>.<ns>`) go through the node's
//! [`ServiceRouter`](super::ServiceRouter), others out through
//! wasmtime-wasi-http's own client.

use std::future::Future;
use std::sync::Arc;

use http::StatusCode;
use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{
    Error as WasiHttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use super::outbound::{AllowedHosts, service_of};
use super::{Body, Handler, HttpSpec, RouterSlot, text};
use crate::sandbox::{Host, MemoryLimit, new_store, timed};

/// WASI 0.2 and wasi:http state of one request's store.
pub(crate) struct HttpState {
    ctx: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: Outbound,
}

impl WasiView for Host<HttpState> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

impl WasiHttpView for Host<HttpState> {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.wasi.http,
            table: &mut self.wasi.table,
            hooks: &mut self.wasi.hooks,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), WasiHttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), WasiHttpError>> + Send>;

/// The outgoing-request policy of one pod.
pub(crate) struct Outbound {
    allowed: AllowedHosts,
    router: RouterSlot,
    /// `namespace/pod:port`, for log lines.
    endpoint: String,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.allowed.permits(&host, port) {
            tracing::warn!(
                endpoint = %self.endpoint,
                host = %host,
                port,
                "outgoing request denied: the host is not in the pod's wasmkube.io/allowed-outbound-hosts"
            );
            return Box::new(async { Err(WasiHttpError::HttpRequestDenied) });
        }
        if let Some((service, namespace)) = service_of(&host)
            && let Some(router) = self.router.get()
        {
            let explicit_port = uri.port_u16();
            return Box::new(async move {
                let request = request.map(Body::new);
                let response = router
                    .route(&namespace, &service, explicit_port, request)
                    .await;
                let response = response.map(|b| {
                    b.map_err(|e| WasiHttpError::InternalError(Some(e.to_string())))
                        .boxed_unsync()
                });
                let io: IoFuture = Box::new(async { Ok(()) });
                Ok((response, io))
            });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            let io: IoFuture = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        })
    }
}

/// Serves one wasi:http container.
pub(crate) struct WasiHttpHandler {
    pre: ProxyPre<Host<HttpState>>,
    spec: Arc<HttpSpec>,
}

/// How a request's instance ended.
enum Ended {
    Returned(wasmtime::Result<()>),
    TimedOut,
    Stopped,
}

/// Aborts the instance's task unless the response was handed over.
struct AbortOnDrop(Option<JoinHandle<(Ended, bool)>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl WasiHttpHandler {
    pub(crate) fn new(pre: ProxyPre<Host<HttpState>>, spec: Arc<HttpSpec>) -> WasiHttpHandler {
        WasiHttpHandler { pre, spec }
    }

    fn failed(&self, status: StatusCode, message: String) -> http::Response<Body> {
        tracing::warn!(container = %self.spec.id, endpoint = %self.spec.key, "{message}");
        text(status, message)
    }
}

#[async_trait::async_trait]
impl Handler for WasiHttpHandler {
    async fn handle(&self, mut req: http::Request<Body>) -> http::Response<Body> {
        let spec = self.spec.clone();
        let deadline = tokio::time::Instant::now() + spec.timeout;
        if req.uri().authority().is_none() && !req.headers().contains_key(http::header::HOST) {
            let host = format!("{}:{}", spec.server_name, spec.key.port);
            if let Ok(value) = http::HeaderValue::from_str(&host) {
                req.headers_mut().insert(http::header::HOST, value);
            }
        }
        let req = req.map(|b| b.map_err(|e| WasiHttpError::InternalError(Some(e.to_string()))));
        let mut builder = WasiCtxBuilder::new();
        builder
            .envs(&spec.env)
            .stdout(spec.stdout.clone())
            .stderr(spec.stderr.clone());
        for p in &spec.preopens {
            let perms = if p.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            if let Err(e) = builder.preopened_dir(&p.host, &p.guest, perms) {
                return self.failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("mounting {} at {}: {e}", p.host.display(), p.guest),
                );
            }
        }
        let host = Host {
            wasi: HttpState {
                ctx: builder.build(),
                table: ResourceTable::new(),
                http: WasiHttpCtx::new(),
                hooks: Outbound {
                    allowed: spec.allowed_hosts.clone(),
                    router: spec.router.clone(),
                    endpoint: spec.key.to_string(),
                },
            },
            // Each instance counts against its own limit; the container's
            // figure is the sum over the requests in flight.
            limits: MemoryLimit::sharing(spec.memory_limit, spec.usage.clone()),
        };
        let mut store = new_store(self.pre.engine(), host, spec.cpu_limit_millis);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let incoming = match store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)
        {
            Ok(r) => r,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("the request cannot be handed to the component: {e:#}"),
                );
            }
        };
        let out = match store.data_mut().http().new_response_outparam(tx) {
            Ok(o) => o,
            Err(e) => {
                return self.failed(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
            }
        };
        let pre = self.pre.clone();
        let usage = spec.usage.clone();
        let stop = spec.stop.clone();
        let task = tokio::spawn(async move {
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, incoming, out)
                    .await
            };
            let ended = tokio::select! {
                biased;
                () = stop.cancelled() => Ended::Stopped,
                r = tokio::time::timeout_at(deadline, timed(call, usage)) => match r {
                    Ok(r) => Ended::Returned(r),
                    Err(_) => Ended::TimedOut,
                },
            };
            (ended, store.data().limits.exceeded)
        });
        let mut task = AbortOnDrop(Some(task));
        let timeout = || {
            self.failed(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the request did not finish within its deadline of {:?}",
                    spec.timeout
                ),
            )
        };
        let answer = tokio::select! {
            biased;
            () = spec.stop.cancelled() => {
                return text(StatusCode::SERVICE_UNAVAILABLE, "the container is stopping");
            }
            r = tokio::time::timeout_at(deadline, rx) => r,
        };
        match answer {
            Err(_) => timeout(),
            Ok(Ok(Ok(response))) => {
                // The instance keeps writing the body; its own deadline ends it.
                task.0 = None;
                response.map(Body::new)
            }
            Ok(Ok(Err(code))) => self.failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the component answered with an error: {code:?}"),
            ),
            // The outparam was dropped unset: the instance has ended.
            Ok(Err(_)) => {
                let Some(handle) = task.0.take() else {
                    return timeout();
                };
                match handle.await {
                    Ok((Ended::TimedOut, _)) => timeout(),
                    Ok((Ended::Stopped, _)) => {
                        text(StatusCode::SERVICE_UNAVAILABLE, "the container is stopping")
                    }
                    Ok((Ended::Returned(Ok(())), _)) => self.failed(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the component returned without setting a response".into(),
                    ),
                    Ok((Ended::Returned(Err(e)), true)) => self.failed(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "the component exceeded its memory limit of {} bytes: {e:#}",
                            spec.memory_limit
                        ),
                    ),
                    Ok((Ended::Returned(Err(e)), false)) => self.failed(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the component failed: {e:#}"),
                    ),
                    Err(e) => self.failed(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the request's instance failed: {e}"),
                    ),
                }
            }
        }
    }
}

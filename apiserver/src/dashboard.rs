//! The web dashboard at `/ui/`: three static files compiled into the
//! binary (no build step, nothing fetched at runtime). The page itself holds
//! no data, so it is served without credentials; everything it shows comes
//! from the API with the bearer token the user logs in with (or through
//! `kubectl proxy`, which adds its own), so it sees exactly what that user
//! may see.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the dashboard lives.
pub const PREFIX: &str = "/ui/";

const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Only the page's own script, styles and API calls; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is one of the dashboard's static files (served anonymously).
pub fn is_dashboard_path(path: &str) -> bool {
    matches!(
        path,
        "/ui" | "/ui/" | "/ui/index.html" | "/ui/app.js" | "/ui/style.css"
    )
}

/// The routes of the dashboard's files.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent(PREFIX) }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/index.html",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change with the binary: revalidate, never serve a stale app.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    async fn get(path: &str) -> Response {
        let req = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap_or_default();
        match routes::<()>().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn the_page_and_its_files_are_served_with_a_strict_policy() {
        for (path, ty) in [
            ("/ui/", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/style.css", "text/css"),
        ] {
            let resp = get(path).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            let h = resp.headers();
            assert!(
                h[header::CONTENT_TYPE]
                    .to_str()
                    .is_ok_and(|v| v.starts_with(ty)),
                "{path}"
            );
            assert!(
                h[header::CONTENT_SECURITY_POLICY].to_str().is_ok_and(|v| v
                    .contains("script-src 'self'")
                    && v.contains("frame-ancestors 'none'")),
                "{path}"
            );
            assert!(is_dashboard_path(path));
        }
        let resp = get("/ui").await;
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()[header::LOCATION], "/ui/");
        assert!(!is_dashboard_path("/ui/../api/v1/secrets"));
        assert!(!is_dashboard_path("/ui/other"));
    }

    #[test]
    fn the_page_loads_only_its_own_files() {
        // Inline scripts or styles would be blocked by the policy.
        assert!(!INDEX.contains("<script>") && !INDEX.contains("style="));
        assert!(INDEX.contains(r#"<script src="app.js" defer>"#));
        assert!(!APP_JS.contains("http://") && !APP_JS.contains("https://"));
    }
}

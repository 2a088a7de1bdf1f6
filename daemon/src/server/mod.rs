//! The daemon's HTTP server (axum): the JSON API of web/API.md (`api`), Go-style
//! `/debug/pprof` (`debug_pprof`), Prometheus `/metrics` and the embedded web UI (`assets`).

mod api;
mod assets;
mod debug_pprof;
mod flame;
mod goroutines;
mod params;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};

use crate::daemon::Shared;

pub use params::BadParam;

pub fn router(shared: Arc<Shared>) -> Router {
    let live = Arc::new(tokio::sync::Semaphore::new(shared.config.live_profiles));
    let state = AppState {
        shared: shared.clone(),
        live,
        self_profile: Arc::new(tokio::sync::Semaphore::new(1)),
        census: Arc::new(tokio::sync::Semaphore::new(CENSUSES_AT_ONCE)),
    };
    Router::new()
        .route("/api/v1/processes", get(api::processes))
        .route("/api/v1/types", get(api::types))
        .route("/api/v1/flamegraph", get(api::flamegraph))
        .route("/api/v1/flamegraph/diff", get(api::diff))
        .route("/api/v1/histograms", get(api::histograms))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/goroutines", get(goroutines::goroutines))
        .route("/api/{*rest}", get(api::not_found))
        .route("/metrics", get(metrics))
        .route("/debug/pprof/", get(debug_pprof::index))
        .route("/debug/pprof", get(debug_pprof::index))
        .route("/debug/pprof/profile", get(debug_pprof::profile))
        .route("/debug/pprof/self", get(debug_pprof::self_profile))
        .route("/debug/pprof/goroutine", get(debug_pprof::goroutine))
        .fallback(get(assets::file))
        .layer(middleware::from_fn_with_state(shared, authorize))
        .with_state(state)
}

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    /// Live `/debug/pprof/profile` requests running at once.
    pub live: Arc<tokio::sync::Semaphore>,
    pub self_profile: Arc<tokio::sync::Semaphore>,
    /// Goroutine censuses asked for over HTTP running at once.
    pub census: Arc<tokio::sync::Semaphore>,
}

/// Goroutine censuses (`/api/v1/goroutines`, `/debug/pprof/goroutine`) at once; more get 429.
const CENSUSES_AT_ONCE: usize = 2;

/// Query parameters by name (`?all` gives `all` = ""); malformed encodings are decoded
/// lossily rather than refused, and unknown parameters are ignored (API.md).
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw.unwrap_or("")).unwrap_or_default();
        Query(pairs.into_iter().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The `[from, to)` range asked for, the last minute when neither is given.
    pub fn range_or_last_minute(
        &self,
    ) -> Result<(std::time::SystemTime, std::time::SystemTime), params::BadParam> {
        params::range(
            "from",
            self.get("from"),
            "to",
            self.get("to"),
            Some("now-1m"),
            std::time::SystemTime::now(),
        )
    }
}

/// An API error: a status and a one-line reason, as `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl From<BadParam> for ApiError {
    fn from(e: BadParam) -> Self {
        ApiError(StatusCode::BAD_REQUEST, e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// With a token configured, every request needs `Authorization: Bearer TOKEN`.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.config.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            let mut r = ApiError(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer ...)".into(),
            )
            .into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.shared.metrics.render() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

//! The web UI (`web/`), embedded in the binary: no file or network access at run time.

use axum::{
    extract::Request,
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

/// (path, content type, bytes) of every file the daemon serves (API.md, "Static files").
const FILES: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("../../../web/index.html")),
    ("style.css", CSS, include_str!("../../../web/style.css")),
    ("app.js", JS, include_str!("../../../web/app.js")),
    ("api.js", JS, include_str!("../../../web/api.js")),
    ("flame.js", JS, include_str!("../../../web/flame.js")),
    ("format.js", JS, include_str!("../../../web/format.js")),
    (
        "goroutines.js",
        JS,
        include_str!("../../../web/goroutines.js"),
    ),
    (
        "histogram.js",
        JS,
        include_str!("../../../web/histogram.js"),
    ),
    ("proclist.js", JS, include_str!("../../../web/proclist.js")),
];
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

pub async fn file(request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no such page: /{path}\n")).into_response(),
    }
}

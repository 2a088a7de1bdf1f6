//! `/api/v1/goroutines?pid=P[&older_than=D]`: the goroutines of a Go process now (a census
//! read from its memory), grouped per identical stack as `loupe goroutines --json` groups
//! them, with its leak view (blocked longer than `older_than`) in the same answer, so both
//! come from one census (web/API.md).

use std::time::{Duration, Instant};

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use crate::{
    daemon::census::{Kind, Lookup, SchedLatency},
    goroutines::{report, GoProcess},
};

use super::{
    params::{self, format_time, BadParam},
    ApiError, AppState, Query,
};

/// Groups returned per view at most (largest first); the rest are counted in `*_omitted`.
const MAX_GROUPS: usize = 500;

/// The pid parameter: a process id, or a 400 naming the problem.
pub fn pid_param(q: &Query) -> Result<u32, BadParam> {
    match q.get("pid") {
        None => Err(BadParam("missing parameter pid (a Go process)".into())),
        Some(text) => match text.parse::<u32>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(BadParam(format!(
                "bad parameter pid: {text:?} is not a process id"
            ))),
        },
    }
}

/// The Go process `pid`, from the daemon's cache (or found now): 404 when there is no such
/// process, 422 with the reason when it is not a Go program loupe can read. Blocks: call it
/// off the async workers.
pub fn go_process(state: &AppState, pid: u32) -> Result<std::sync::Arc<GoProcess>, ApiError> {
    match state.shared.go.get(pid) {
        Lookup::Known(Kind::Go(p)) => Ok(p),
        Lookup::Known(Kind::NotCounted(refusal)) => {
            Err(ApiError(StatusCode::UNPROCESSABLE_ENTITY, refusal.message))
        }
        Lookup::Gone => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no process with PID {pid}"),
        )),
    }
}

pub async fn goroutines(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    match answer(state, raw).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn answer(state: AppState, raw: Option<String>) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref());
    let pid = pid_param(&q)?;
    let older_than = match q.get("older_than") {
        None => state.shared.config.goroutine_leak_threshold,
        Some(text) => params::duration("older_than", text)?,
    };
    let Ok(permit) = state.census.clone().try_acquire_owned() else {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "goroutine censuses are already running (the limit is 2); retry in a moment".into(),
        ));
    };
    // Reading another process's memory blocks: off the async workers.
    let body = tokio::task::spawn_blocking(move || -> Result<Value, ApiError> {
        let _permit = permit;
        let process = go_process(&state, pid)?;
        let started = Instant::now();
        let snapshot = process.snapshot().map_err(|e| match e {
            crate::goroutines::GoroutineError::ProcessExited { .. } => ApiError(
                StatusCode::NOT_FOUND,
                format!("process {pid} exited during the census"),
            ),
            e => ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        })?;
        let census_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut doc = document(&snapshot, older_than, census_ms);
        let (latency, why) = sched_latency(&state, pid);
        doc["sched_latency"] = latency;
        if let Some(why) = why {
            doc["sched_latency_unavailable"] = json!(why);
        }
        Ok(doc)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })??;
    let mut r = Json(body).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// The runtime's scheduling latency histogram between the daemon's two latest census reads
/// of `pid`, in the shape of `/api/v1/histograms` (so the UI draws it with the same code);
/// or null and why (API.md).
fn sched_latency(state: &AppState, pid: u32) -> (Value, Option<String>) {
    let census = state.shared.config.goroutine_census_interval;
    let interval = match state.shared.go.sched_latency(pid) {
        SchedLatency::Interval(i) => i,
        SchedLatency::Unreadable(why) => return (Value::Null, Some(why)),
        SchedLatency::NotYet => {
            let why = match census {
                None => "the daemon's periodic goroutine census is off (goroutine_census_interval = \"0s\"): it reads the runtime's histogram".to_string(),
                Some(every) => format!(
                    "not read twice yet: the goroutine census reads the runtime's histogram every {} s, of the {} processes with the most CPU",
                    every.as_secs_f64(),
                    state.shared.config.goroutine_census_processes
                ),
            };
            return (Value::Null, Some(why));
        }
    };
    let buckets: Vec<Value> = interval
        .buckets
        .iter()
        .map(|&(le_ns, count)| json!({"le_ns": le_ns, "count": count}))
        .collect();
    let q = |v: u64| (interval.count > 0).then_some(v);
    let h = json!({
        "name": "go_sched_latency",
        "source": "runtime",
        "from": format_time(interval.from),
        "to": format_time(interval.to),
        "census_interval_seconds": census.map(|d| d.as_secs_f64()),
        "buckets": buckets,
        "count": interval.count,
        "sum_ns": interval.sum_ns,
        "mean_ns": q(interval.mean_ns),
        "p50_ns": q(interval.p50_ns),
        "p90_ns": q(interval.p90_ns),
        "p99_ns": q(interval.p99_ns),
        "max_ns": null,
    });
    (h, None)
}

/// The answer: the stacks report, plus `leaks` and when it was taken (API.md).
fn document(
    snapshot: &crate::goroutines::snapshot::Snapshot,
    older_than: Duration,
    census_ms: f64,
) -> Value {
    let mut stacks = report::report(snapshot, None);
    let leaks = report::report(snapshot, Some(older_than));
    let omitted = stacks.groups.len().saturating_sub(MAX_GROUPS);
    stacks.groups.truncate(MAX_GROUPS);
    let suspects: u64 = leaks.groups.iter().map(|g| g.count).sum();
    let leak_groups = leaks.groups.len();
    let mut leak_list = leaks.groups;
    leak_list.truncate(MAX_GROUPS);
    let mut v = serde_json::to_value(&stacks).unwrap_or_else(|_| json!({}));
    v["groups_omitted"] = json!(omitted);
    v["taken_at"] = json!(format_time(snapshot.taken_at));
    v["census_ms"] = json!(census_ms);
    v["leaks"] = json!({
        "older_than_ns": leaks.older_than_ns,
        "count": suspects,
        "groups": leak_list,
        "groups_omitted": leak_groups.saturating_sub(MAX_GROUPS),
    });
    v
}

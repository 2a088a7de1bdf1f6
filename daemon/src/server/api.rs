//! `/api/v1/...`: the JSON the web UI reads, exactly as web/API.md specifies.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::SystemTime,
};

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Map, Value};

use crate::{
    daemon::{store::covered, store::StoredWindow, Shared},
    histogram::LatencyHistogram,
    profile::ProfileType,
    stat::RUNQUEUE_HISTOGRAM,
};

use super::{
    flame::{Side, Tree},
    params::{self, format_time, BadParam, Target},
    ApiError, AppState, Query,
};

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> ApiResult {
    let mut r = Json(value).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

fn windows(shared: &Shared, from: SystemTime, to: SystemTime) -> Vec<Arc<StoredWindow>> {
    shared
        .store
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .range(from, to)
}

pub async fn not_found(request: axum::extract::Request) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", request.uri().path()),
    )
}

pub async fn processes(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let window = params::duration("window", q.get("window").unwrap_or("60s"))?;
    let shared = &state.shared;
    let now = SystemTime::now();
    let from = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let found = windows(shared, from, now);
    let (from, to) = covered(&found, from, now);
    struct Acc {
        latest: Arc<crate::daemon::attribution::ProcessInfo>,
        exited: bool,
        cpu: u64,
        offcpu: Option<u64>,
        runq: LatencyHistogram,
    }
    let mut acc: HashMap<u32, Acc> = HashMap::new();
    for w in &found {
        for p in w.processes.iter() {
            let a = acc.entry(p.pid).or_insert_with(|| Acc {
                latest: p.info.clone(),
                exited: false,
                cpu: 0,
                offcpu: None,
                runq: LatencyHistogram::default(),
            });
            a.latest = p.info.clone();
            a.exited |= p.exited;
            a.cpu += p.cpu_samples;
            if let Some(ns) = p.offcpu_ns {
                a.offcpu = Some(a.offcpu.unwrap_or(0) + ns);
            }
            a.runq.merge(&p.runqueue());
        }
    }
    let period = shared.cpu_period_ns() as f64 / 1e9;
    let list: Vec<Value> = acc
        .into_iter()
        .map(|(pid, a)| {
            let alive = !a.exited && std::path::Path::new(&format!("/proc/{pid}")).exists();
            json!({
                "pid": pid,
                "comm": a.latest.comm,
                "exe": a.latest.exe,
                "container_id": a.latest.container_id,
                "pod": a.latest.pod,
                "alive": alive,
                "cpu_seconds": a.cpu as f64 * period,
                "offcpu_seconds": a.offcpu.map(|ns| ns as f64 / 1e9),
                "runq_p99_ns": (shared.sched_enabled && a.runq.count > 0).then(|| a.runq.quantile(0.99)),
                "go": shared.go.known(pid),
            })
        })
        .collect();
    ok(json!({"from": format_time(from), "to": format_time(to), "processes": list}))
}

/// (type, label, unit, description) of every profile type the daemon knows.
fn type_table(shared: &Shared) -> Vec<(ProfileType, &'static str, &'static str, String)> {
    vec![
        (
            ProfileType::Cpu,
            "CPU",
            "samples",
            format!(
                "On-CPU stacks sampled at {} Hz per CPU",
                shared.config.cpu_frequency_hz
            ),
        ),
        (
            ProfileType::OffCpu,
            "Off-CPU",
            "nanoseconds",
            "Time blocked off-CPU, by the stack that blocked".into(),
        ),
    ]
}

fn collector_of(profile_type: ProfileType) -> &'static str {
    match profile_type {
        ProfileType::OffCpu => "offcpu",
        _ => "cpu",
    }
}

fn collector<'a>(shared: &'a Shared, name: &str) -> Option<&'a crate::daemon::CollectorState> {
    shared.collectors.iter().find(|c| c.name == name)
}

pub async fn types(State(state): State<AppState>) -> ApiResult {
    let shared = &state.shared;
    let types: Vec<Value> = type_table(shared)
        .into_iter()
        .map(|(t, label, unit, description)| {
            let c = collector(shared, collector_of(t));
            let enabled = c.is_some_and(|c| c.enabled);
            let mut v = json!({"type": t.name(), "label": label, "unit": unit,
                               "enabled": enabled, "description": description});
            if t == ProfileType::Cpu {
                v["period_ns"] = json!(shared.cpu_period_ns());
            }
            if !enabled {
                v["reason"] = json!(c.map_or("not built in", |c| c.detail.as_str()));
            }
            v
        })
        .collect();
    let runq = collector(shared, "runqueue");
    let mut h = json!({"name": RUNQUEUE_HISTOGRAM, "label": "Run-queue latency",
        "enabled": runq.is_some_and(|c| c.enabled),
        "description": "Time from wakeup to running on a CPU, per thread wakeup"});
    if let Some(c) = runq.filter(|c| !c.enabled) {
        h["reason"] = json!(c.detail);
    }
    ok(json!({"types": types, "histograms": [h]}))
}

/// The profile type asked for, if enabled.
fn profile_type(shared: &Shared, q: &Query) -> Result<(ProfileType, &'static str), BadParam> {
    let name = q
        .get("type")
        .ok_or_else(|| BadParam("missing parameter type (cpu or offcpu)".into()))?;
    let table = type_table(shared);
    let Some((t, _, unit, _)) = table.iter().find(|(t, ..)| t.name() == name) else {
        let names: Vec<&str> = table.iter().map(|(t, ..)| t.name()).collect();
        return Err(BadParam(format!(
            "unknown profile type {name:?}; available: {}",
            names.join(", ")
        )));
    };
    match collector(shared, collector_of(*t)) {
        Some(c) if c.enabled => Ok((*t, unit)),
        Some(c) => Err(BadParam(format!(
            "profile type {name:?} is disabled: {}",
            c.detail
        ))),
        None => Err(BadParam(format!("profile type {name:?} is disabled"))),
    }
}

fn target(q: &Query) -> Result<Target, BadParam> {
    params::target(q.get("pid"), q.get("container"), q.has("all"))
}

/// The pids a target selects in `windows` (None: every pid).
fn pids_of(
    target: &Target,
    windows: &[Arc<StoredWindow>],
) -> Result<Option<HashSet<u32>>, BadParam> {
    match target {
        Target::All => Ok(None),
        Target::Pid(pid) => Ok(Some(HashSet::from([*pid]))),
        Target::Container(prefix) => {
            let mut ids = HashSet::new();
            let mut pids = HashSet::new();
            for w in windows {
                for p in w.processes.iter() {
                    if let Some(id) = p
                        .info
                        .container_id
                        .as_deref()
                        .filter(|id| id.starts_with(prefix.as_str()))
                    {
                        ids.insert(id.to_string());
                        pids.insert(p.pid);
                    }
                }
            }
            if ids.len() > 1 {
                return Err(BadParam(format!(
                    "bad parameter container: {prefix:?} matches {} containers; give more digits",
                    ids.len()
                )));
            }
            Ok(Some(pids))
        }
    }
}

fn max_nodes(q: &Query) -> Result<Option<usize>, BadParam> {
    match q.get("max_nodes") {
        None => Ok(None),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(BadParam(format!(
                "bad parameter max_nodes: {text:?} is not an integer of at least 1"
            ))),
        },
    }
}

fn add_windows(
    tree: &mut Tree,
    windows: &[Arc<StoredWindow>],
    profile_type: ProfileType,
    pids: &Option<HashSet<u32>>,
    side: Side,
) {
    let keep = |pid: u32| pids.as_ref().is_none_or(|p| p.contains(&pid));
    for w in windows {
        if let Some(profile) = w.profile(profile_type, &keep) {
            tree.add(&profile, side, &keep);
        }
    }
}

fn drops(windows: &[Arc<StoredWindow>], profile_type: ProfileType) -> Map<String, Value> {
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    for w in windows {
        if let Some(p) = w.profiles.get(&profile_type) {
            for (name, n) in &p.drops {
                *totals.entry(name.clone()).or_default() += n;
            }
        }
    }
    totals.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

fn type_header(shared: &Shared, t: ProfileType, unit: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("type".into(), json!(t.name()));
    m.insert("unit".into(), json!(unit));
    if unit == "samples" {
        m.insert("period_ns".into(), json!(shared.cpu_period_ns()));
    }
    m
}

/// Runs the CPU-heavy part of a request off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    })
}

pub async fn flamegraph(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let shared = state.shared.clone();
    let (t, unit) = profile_type(&shared, &q)?;
    let target = target(&q)?;
    let (from, to) = q.range_or_last_minute()?;
    let max = max_nodes(&q)?;
    let found = windows(&shared, from, to);
    let pids = pids_of(&target, &found)?;
    let body = blocking(move || {
        let mut tree = Tree::default();
        add_windows(&mut tree, &found, t, &pids, Side::B);
        let (root, trimmed) = tree.to_json(max, false);
        let (from, to) = covered(&found, from, to);
        let mut m = type_header(&shared, t, unit);
        m.insert("from".into(), json!(format_time(from)));
        m.insert("to".into(), json!(format_time(to)));
        m.insert("total".into(), json!(tree.total(Side::B)));
        m.insert("trimmed".into(), json!(trimmed));
        m.insert("drops".into(), Value::Object(drops(&found, t)));
        m.insert("root".into(), root);
        Value::Object(m)
    })
    .await?;
    ok(body)
}

pub async fn diff(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let shared = state.shared.clone();
    let (t, unit) = profile_type(&shared, &q)?;
    let target = target(&q)?;
    let now = SystemTime::now();
    let (a_from, a_to) =
        params::range("a_from", q.get("a_from"), "a_to", q.get("a_to"), None, now)?;
    let (b_from, b_to) =
        params::range("b_from", q.get("b_from"), "b_to", q.get("b_to"), None, now)?;
    let max = max_nodes(&q)?;
    let a = windows(&shared, a_from, a_to);
    let b = windows(&shared, b_from, b_to);
    let both: Vec<Arc<StoredWindow>> = a.iter().chain(&b).cloned().collect();
    let pids = pids_of(&target, &both)?;
    let body = blocking(move || {
        let mut tree = Tree::default();
        add_windows(&mut tree, &a, t, &pids, Side::A);
        add_windows(&mut tree, &b, t, &pids, Side::B);
        let (root, trimmed) = tree.to_json(max, true);
        let span = |w: &[Arc<StoredWindow>], from, to, side| {
            let (f, t) = covered(w, from, to);
            json!({"from": format_time(f), "to": format_time(t), "total": tree.total(side)})
        };
        let mut m = type_header(&shared, t, unit);
        m.insert("a".into(), span(&a, a_from, a_to, Side::A));
        m.insert("b".into(), span(&b, b_from, b_to, Side::B));
        m.insert("trimmed".into(), json!(trimmed));
        m.insert("root".into(), root);
        Value::Object(m)
    })
    .await?;
    ok(body)
}

pub async fn histograms(State(state): State<AppState>, RawQuery(raw): RawQuery) -> ApiResult {
    let q = Query::parse(raw.as_deref());
    let shared = &state.shared;
    let name = q
        .get("name")
        .ok_or_else(|| BadParam("missing parameter name (runqueue)".into()))?;
    if name != RUNQUEUE_HISTOGRAM {
        return Err(BadParam(format!(
            "unknown histogram {name:?}; available: {RUNQUEUE_HISTOGRAM}"
        ))
        .into());
    }
    if let Some(c) = collector(shared, "runqueue").filter(|c| !c.enabled) {
        return Err(BadParam(format!("histogram {name:?} is disabled: {}", c.detail)).into());
    }
    let target = target(&q)?;
    let (from, to) = q.range_or_last_minute()?;
    let found = windows(shared, from, to);
    let pids = pids_of(&target, &found)?;
    let mut h = LatencyHistogram::default();
    for w in &found {
        for p in w.processes.iter() {
            if pids.as_ref().is_none_or(|s| s.contains(&p.pid)) {
                h.merge(&p.runqueue());
            }
        }
    }
    let (from, to) = covered(&found, from, to);
    let buckets: Vec<Value> = h
        .nonzero_buckets()
        .map(|(end, count)| json!({"le_ns": end - 1, "count": count}))
        .collect();
    let q = |x: f64| (h.count > 0).then(|| h.quantile(x));
    ok(json!({
        "name": name, "from": format_time(from), "to": format_time(to),
        "buckets": buckets, "count": h.count, "sum_ns": h.sum_ns,
        "p50_ns": q(0.5), "p90_ns": q(0.9), "p99_ns": q(0.99), "max_ns": null,
    }))
}

pub async fn status(State(state): State<AppState>) -> ApiResult {
    let shared = &state.shared;
    let collectors: Vec<Value> = shared
        .collectors
        .iter()
        .map(|c| {
            if c.enabled {
                json!({"name": c.name, "enabled": true, "detail": c.detail})
            } else {
                json!({"name": c.name, "enabled": false, "reason": c.detail})
            }
        })
        .collect();
    let drops: Map<String, Value> = shared
        .counters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    let (count, oldest, newest, store_bytes) = {
        let s = shared.store.read().unwrap_or_else(|e| e.into_inner());
        (s.len(), s.oldest(), s.newest(), s.bytes())
    };
    ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "hostname": shared.hostname,
        "started": format_time(shared.started),
        "now": format_time(SystemTime::now()),
        "collectors": collectors,
        "drops": drops,
        "windows": {
            "count": count,
            "seconds": shared.config.window.as_secs_f64(),
            "oldest": oldest.map(format_time),
            "newest": newest.map(format_time),
            "retention_seconds": shared.config.retention.as_secs_f64(),
        },
        "memory": {
            "rss_bytes": crate::daemon::metrics::rss_bytes(),
            "store_bytes": store_bytes,
            "bpf_maps_bytes": crate::daemon::metrics::bpf_map_bytes(),
        },
    }))
}

//! Go's `net/http/pprof` conventions: `go tool pprof http://HOST:7470/debug/pprof/profile?pid=N&seconds=S`
//! gets a live CPU profile of process N (the whole host without `pid`) over the next S
//! seconds, or with `from=`/`to=` one from the store; `/debug/pprof/self` is the daemon's
//! own CPU profile (the `pprof` crate); `/debug/pprof/` lists them.

use std::time::Duration;

use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderValue, StatusCode},
    response::{Html, IntoResponse, Response},
};

use crate::{
    collectors::{cpu::UnwindMode, targets::TargetSpec},
    engine::{Capability, Session, SessionConfig},
    profile::{Profile, ProfileMerger, ProfileType},
    render::{self, Format},
    symbolize::Symbolizer,
};

use super::{AppState, Query};

/// Go's default profile length.
const DEFAULT_SECONDS: u64 = 30;

type Answer = Result<Response, (StatusCode, String)>;

fn bad(message: String) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message + "\n")
}

fn internal(what: &str, e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}\n"))
}

fn respond(answer: Answer) -> Response {
    match answer {
        Ok(r) => r,
        Err((status, text)) => {
            let mut r = (status, text).into_response();
            if status == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            r
        }
    }
}

/// `profile` as a gzipped pprof download.
fn profile_response(profile: &Profile) -> Answer {
    let mut body = Vec::new();
    render::render(profile, Format::Pprof, &mut body).map_err(|e| internal("writing pprof", e))?;
    Ok(pprof_response(body, "profile.pb.gz"))
}

fn pprof_response(body: Vec<u8>, name: &str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        body,
    )
        .into_response()
}

fn seconds(q: &Query, max: u64) -> Result<Duration, (StatusCode, String)> {
    let Some(text) = q.get("seconds") else {
        return Ok(Duration::from_secs(DEFAULT_SECONDS.min(max)));
    };
    match text.parse::<u64>() {
        Ok(s) if (1..=max).contains(&s) => Ok(Duration::from_secs(s)),
        Ok(s) => Err(bad(format!(
            "bad parameter seconds: {s} is not between 1 and {max}"
        ))),
        Err(_) => Err(bad(format!(
            "bad parameter seconds: {text:?} is not a whole number of seconds"
        ))),
    }
}

pub async fn index() -> Html<&'static str> {
    Html(concat!(
        "<!doctype html><html><head><title>/debug/pprof/</title></head><body>\n",
        "<h1>/debug/pprof/</h1>\n<p>CPU profiles in pprof format (<code>go tool pprof URL</code>).</p>\n",
        "<table>\n",
        "<tr><td><a href=\"profile?seconds=30\">profile</a></td><td>a live CPU profile of the whole host, or of one process with ",
        "<code>pid=N</code>, over the next <code>seconds=S</code> (default 30); with <code>from=</code>/<code>to=</code> ",
        "(RFC 3339, unix seconds or now-5m) it comes from the store instead</td></tr>\n",
        "<tr><td>goroutine</td><td>the live goroutines of Go process <code>pid=N</code>, counted per stack ",
        "(pprof <code>goroutine/count</code>, labels <code>state</code> and <code>wait_reason</code>); <code>debug=1</code>: ",
        "the grouped text dump of <code>loupe goroutines</code></td></tr>\n",
        "<tr><td><a href=\"self?seconds=30\">self</a></td><td>the daemon's own CPU profile over <code>seconds=S</code></td></tr>\n",
        "</table>\n<p>Example: <code>go tool pprof http://127.0.0.1:7470/debug/pprof/profile?pid=1234&amp;seconds=10</code></p>\n",
        "</body></html>\n"
    ))
}

pub async fn profile(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    respond(profile_answer(state, raw).await)
}

async fn profile_answer(state: AppState, raw: Option<String>) -> Answer {
    let q = Query::parse(raw.as_deref());
    let pid = match q.get("pid") {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                return Err(bad(format!(
                    "bad parameter pid: {text:?} is not a process id"
                )))
            }
        },
    };
    if q.has("from") || q.has("to") {
        return stored(&state, pid, &q).await;
    }
    let duration = seconds(&q, state.shared.config.max_profile_seconds)?;
    if let Some(p) = pid {
        if !std::path::Path::new(&format!("/proc/{p}")).exists() {
            return Err((StatusCode::NOT_FOUND, format!("no process with PID {p}\n")));
        }
    }
    let Ok(_permit) = state.live.clone().try_acquire_owned() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} live profiles are already running (the limit); retry later, or ask the store with from=/to=\n",
                state.shared.config.live_profiles
            ),
        ));
    };
    let hz = state.shared.config.live_frequency_hz;
    let targets = match pid {
        Some(p) => TargetSpec::Pids(vec![p]),
        None => TargetSpec::All,
    };
    let description = targets.describe();
    let session = tokio::task::spawn_blocking(move || {
        Session::start(SessionConfig {
            targets,
            capabilities: vec![Capability::Cpu {
                frequency_hz: hz,
                unwind: UnwindMode::Auto,
            }],
        })
    })
    .await
    .map_err(|e| internal("starting the profile", e))?
    .map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot start a live profile: {e}\n"),
        )
    })?;
    // If the client goes away, this future is dropped, and with it the session.
    let mut live = LiveSession(Some(session));
    tokio::time::sleep(duration).await;
    let session = live
        .0
        .take()
        .ok_or_else(|| internal("profile", "lost its session"))?;
    tokio::task::spawn_blocking(move || -> Answer {
        let mut window = session
            .stop()
            .map_err(|e| internal("stopping the profile", e))?;
        let profile =
            window.build_profile(ProfileType::Cpu, description, hz, &Symbolizer::default());
        profile_response(&profile)
    })
    .await
    .map_err(|e| internal("building the profile", e))?
}

/// A live session whose owner may be dropped on an async worker: stopping joins the engine
/// thread, so it is done on its own thread.
struct LiveSession(Option<Session>);

impl Drop for LiveSession {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            let _ = std::thread::Builder::new()
                .name("loupe-live-stop".into())
                .spawn(move || drop(session));
        }
    }
}

/// The CPU profile of `pid` (or everything) from the stored windows in `[from, to)`.
async fn stored(state: &AppState, pid: Option<u32>, q: &Query) -> Answer {
    let (from, to) = q.range_or_last_minute().map_err(|e| bad(e.0))?;
    if !state.shared.cpu_enabled {
        return Err(bad("the cpu collector is disabled".into()));
    }
    let windows = state
        .shared
        .store
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .range(from, to);
    tokio::task::spawn_blocking(move || -> Answer {
        let mut merged = ProfileMerger::default();
        for w in &windows {
            if let Some(mut p) = w.profile(ProfileType::Cpu, &|p| pid.is_none_or(|x| x == p)) {
                if let Some(pid) = pid {
                    p.target = format!("pid {pid}");
                }
                merged.add(p);
            }
        }
        let Some(profile) = merged.finish() else {
            return Err((
                StatusCode::NOT_FOUND,
                "no stored window in that range\n".into(),
            ));
        };
        profile_response(&profile)
    })
    .await
    .map_err(|e| internal("building the profile", e))?
}

pub async fn self_profile(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    respond(self_answer(state, raw).await)
}

async fn self_answer(state: AppState, raw: Option<String>) -> Answer {
    let q = Query::parse(raw.as_deref());
    let duration = seconds(&q, state.shared.config.max_profile_seconds)?;
    let Ok(permit) = state.self_profile.clone().try_acquire_owned() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "a profile of the daemon itself is already running; retry later\n".into(),
        ));
    };
    tokio::task::spawn_blocking(move || -> Answer {
        let _permit = permit;
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| internal("starting the self profile", e))?;
        std::thread::sleep(duration);
        let report = guard
            .report()
            .build()
            .map_err(|e| internal("building the self profile", e))?;
        let profile = report
            .pprof()
            .map_err(|e| internal("encoding the self profile", e))?;
        use pprof::protos::Message;
        let mut body = Vec::new();
        profile
            .encode(&mut body)
            .map_err(|e| internal("encoding the self profile", e))?;
        Ok(pprof_response(body, "self.pb"))
    })
    .await
    .map_err(|e| internal("self profile", e))?
}

/// `/debug/pprof/goroutine?pid=N[&debug=1]`: a census of a Go process's goroutines now, as
/// Go's own endpoint gives it: pprof (`goroutine/count`), or the grouped text dump.
pub async fn goroutine(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    respond(goroutine_answer(state, raw).await)
}

async fn goroutine_answer(state: AppState, raw: Option<String>) -> Answer {
    use crate::goroutines;
    let q = Query::parse(raw.as_deref());
    let pid = match q.get("pid").map(str::parse::<u32>) {
        Some(Ok(p)) if p > 0 => p,
        Some(_) => return Err(bad("bad parameter pid: not a process id".to_string())),
        None => return Err(bad("missing parameter pid (a Go process)".to_string())),
    };
    let text = match q.get("debug") {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => return Err(bad(format!("bad parameter debug: {other:?} is not 0 or 1"))),
    };
    let Ok(permit) = state.census.clone().try_acquire_owned() else {
        return Err((
            StatusCode::TOO_MANY_REQUESTS,
            "goroutine censuses are already running (the limit is 2); retry in a moment\n".into(),
        ));
    };
    // Reading another process's memory blocks: off the async workers. The Go tables come
    // from the daemon's cache (parsed once per process).
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let process =
            super::goroutines::go_process(&state, pid).map_err(|e| (e.0, format!("{}\n", e.1)))?;
        let snapshot = process.snapshot().map_err(|e| match e {
            goroutines::GoroutineError::ProcessExited { .. } => (
                StatusCode::NOT_FOUND,
                format!("no process with PID {pid}\n"),
            ),
            e => (StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        })?;
        if text {
            let report = goroutines::report::report(&snapshot, None);
            let mut body = Vec::new();
            goroutines::report::render_table(&report, &mut body)
                .map_err(|e| internal("writing the goroutine dump", e))?;
            return Ok((
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                )],
                body,
            )
                .into_response());
        }
        profile_response(&goroutines::profile::profile(
            &snapshot,
            format!("pid {pid}"),
        ))
    })
    .await
    .map_err(|e| internal("taking the goroutine census", e))?
}

//! The daemon's goroutine census: every `goroutine_census_interval`, the goroutines of the
//! Go processes with the most CPU in the recent windows are counted (per state, per wait
//! reason, leak suspects) into `/metrics`, on a thread of its own: a census reads another
//! process's memory and must never stall sampling or HTTP.
//!
//! Whether a process is Go is found once per (pid, start time) and kept, with the reason when
//! it is not (or is an unsupported release), so a non-Go process costs one look at its
//! executable's section headers in its life. The API (`/api/v1/goroutines`) shares the same
//! cache, so a Go binary's tables are parsed once for both.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    goroutines::{
        report::{leak_suspects, Counts},
        sched_latency::{self, RuntimeHistogram},
        GoProcess, GoroutineError,
    },
    histogram::LatencyHistogram,
};

use super::Shared;

/// How far back the store is read to find the processes to count: long enough to see an idle
/// Go program, whose runtime still wakes every couple of minutes (forced GC, sysmon).
const CANDIDATE_LOOKBACK: Duration = Duration::from_secs(600);

/// Processes looked at for the first time per round at most (the rest wait for the next one).
const NEW_DETECTIONS_PER_ROUND: usize = 256;

/// Entries kept at most; past this, entries of processes not seen lately go first.
const MAX_CACHED: usize = 8192;

/// What is known about one process.
#[derive(Clone)]
pub enum Kind {
    Go(Arc<GoProcess>),
    /// Not Go, or a Go program loupe cannot read: the one-line reason, never retried while
    /// the process lives.
    NotCounted(Refusal),
}

/// Why a process gets no census.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Why a census did not happen, as the `reason` label of `loupe_go_census_errors_total`.
pub fn error_reason(e: &GoroutineError) -> &'static str {
    match e {
        GoroutineError::ProcessExited { .. } => "exited",
        GoroutineError::NoExecutable { .. } | GoroutineError::NotGo { .. } => "not_go",
        GoroutineError::UnsupportedVersion { .. }
        | GoroutineError::AllgsNotFound { .. }
        | GoroutineError::SchedNotFound { .. }
        | GoroutineError::GoTable { .. }
        | GoroutineError::Binary { .. } => "unsupported",
        GoroutineError::PermissionDenied { .. } => "denied",
        GoroutineError::Unreadable { .. }
        | GoroutineError::Io { .. }
        | GoroutineError::HistogramWentBack { .. } => "unreadable",
    }
}

struct Entry {
    start_time: u64,
    kind: Kind,
    last_used: Instant,
}

/// Go detection per (pid, start time), shared by the periodic census and the API.
#[derive(Default)]
pub struct GoProcesses {
    cache: Mutex<HashMap<u32, Entry>>,
    /// Each counted Go process's scheduling latency reader, by pid (the census thread's).
    latency: Mutex<HashMap<u32, Latency>>,
}

/// The runtime's own scheduling latency histogram of one process (`sched_latency`).
struct Latency {
    start_time: u64,
    /// Err: why this release's histogram cannot be read (not retried while the process lives).
    reader: Result<sched_latency::Reader, String>,
    /// The previous reading and when it was taken, to take differences from.
    last: Option<(RuntimeHistogram, SystemTime)>,
    /// What the runtime recorded between the two latest readings (for the API).
    latest: Option<Arc<SchedInterval>>,
}

/// The goroutine scheduling latencies a Go runtime recorded between two census reads of its
/// histogram, in the runtime's own buckets (`/api/v1/goroutines`).
#[derive(Clone, Debug)]
pub struct SchedInterval {
    /// When the two reads were taken (each just after its read).
    pub from: SystemTime,
    pub to: SystemTime,
    /// (inclusive upper bound ns, None for the open-ended top; count), contiguous.
    pub buckets: Vec<(Option<u64>, u64)>,
    pub count: u64,
    /// Each wait taken at its bucket's middle: the runtime keeps no sum.
    pub sum_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
}

impl SchedInterval {
    fn of(window: &RuntimeHistogram, from: SystemTime, to: SystemTime) -> SchedInterval {
        SchedInterval {
            from,
            to,
            buckets: window.own_buckets(),
            count: window.count(),
            sum_ns: window.midpoint_sum_ns(),
            mean_ns: window.mean_ns(),
            p50_ns: window.quantile(0.5),
            p90_ns: window.quantile(0.9),
            p99_ns: window.quantile(0.99),
        }
    }
}

/// What the API can say of a process's scheduling latency.
pub enum SchedLatency {
    /// Between the census's two latest reads.
    Interval(Arc<SchedInterval>),
    /// The histogram of this process cannot be read: why.
    Unreadable(String),
    /// Not read twice yet (or the process is not among those the census counts).
    NotYet,
}

/// What [`GoProcesses::get`] answers.
pub enum Lookup {
    Known(Kind),
    /// The process does not exist (or exited while it was looked at).
    Gone,
}

impl GoProcesses {
    /// What `pid` is: from the cache, or found now (reading its executable: call it off the
    /// async workers).
    pub fn get(&self, pid: u32) -> Lookup {
        let Some(started) = start_time(pid) else {
            return Lookup::Gone;
        };
        {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = cache.get_mut(&pid).filter(|e| e.start_time == started) {
                e.last_used = Instant::now();
                return Lookup::Known(e.kind.clone());
            }
        }
        // Outside the lock: parsing a large Go binary takes a while.
        let kind = match GoProcess::attach(pid) {
            Ok(p) => Kind::Go(Arc::new(p)),
            Err(GoroutineError::ProcessExited { .. }) => return Lookup::Gone,
            Err(e) => Kind::NotCounted(Refusal {
                reason: error_reason(&e),
                message: e.to_string(),
            }),
        };
        // A pid reused meanwhile would have another start time: keep the answer only if
        // the process is still the one looked at.
        if start_time(pid) != Some(started) {
            return Lookup::Gone;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED {
            evict_oldest(&mut cache, MAX_CACHED / 8);
        }
        cache.insert(
            pid,
            Entry {
                start_time: started,
                kind: kind.clone(),
                last_used: Instant::now(),
            },
        );
        Lookup::Known(kind)
    }

    /// Whether `pid` is known to be Go (true), known not to be (false), or not looked at yet.
    pub fn known(&self, pid: u32) -> Option<bool> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&pid).map(|e| matches!(e.kind, Kind::Go(_)))
    }

    /// The Go processes known (found by a round or asked for over HTTP).
    fn go_pids(&self) -> Vec<u32> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut pids: Vec<u32> = cache
            .iter()
            .filter(|(_, e)| matches!(e.kind, Kind::Go(_)))
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort();
        pids
    }

    /// Forgets processes that exited (or whose pid was reused).
    fn forget_gone(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|pid, e| start_time(*pid) == Some(e.start_time));
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        latency.retain(|pid, l| cache.get(pid).is_some_and(|e| e.start_time == l.start_time));
    }

    /// The goroutine scheduling latencies the runtime of `pid` recorded since the previous
    /// call (None the first time, or when they cannot be read): one read of its memory,
    /// after locating the histogram once per process.
    fn sched_latency_since_last(&self, pid: u32) -> Option<LatencyHistogram> {
        let started = start_time(pid)?;
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match latency.get_mut(&pid) {
            Some(l) if l.start_time == started => l,
            _ => {
                let reader = sched_latency::Reader::attach(pid)
                    .inspect_err(|e| log::debug!("no scheduling latency for process {pid}: {e}"))
                    .map_err(|e| e.to_string());
                latency.insert(
                    pid,
                    Latency {
                        start_time: started,
                        reader,
                        last: None,
                        latest: None,
                    },
                );
                latency.get_mut(&pid)?
            }
        };
        let now = entry.reader.as_ref().ok()?.read().ok()?;
        let at = SystemTime::now();
        let since = entry
            .last
            .as_ref()
            .and_then(|(last, last_at)| Some((now.since(last)?, *last_at)));
        entry.last = Some((now, at));
        let (window, from) = since?;
        entry.latest = Some(Arc::new(SchedInterval::of(&window, from, at)));
        Some(window.to_latency_histogram())
    }

    /// The scheduling latency of `pid` between the census's two latest reads of it.
    pub fn sched_latency(&self, pid: u32) -> SchedLatency {
        let started = start_time(pid);
        let latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        match latency.get(&pid).filter(|l| Some(l.start_time) == started) {
            Some(Latency { reader: Err(e), .. }) => SchedLatency::Unreadable(e.clone()),
            Some(Latency {
                latest: Some(i), ..
            }) => SchedLatency::Interval(i.clone()),
            _ => SchedLatency::NotYet,
        }
    }

    /// (Go, not counted) processes known now.
    fn tally(&self) -> (usize, HashMap<&'static str, usize>) {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut go = 0;
        let mut not = HashMap::new();
        for e in cache.values() {
            match &e.kind {
                Kind::Go(_) => go += 1,
                Kind::NotCounted(r) => *not.entry(r.reason).or_default() += 1,
            }
        }
        (go, not)
    }
}

fn evict_oldest(cache: &mut HashMap<u32, Entry>, n: usize) {
    let mut by_age: Vec<(Instant, u32)> = cache.iter().map(|(p, e)| (e.last_used, *p)).collect();
    by_age.sort();
    for (_, pid) in by_age.into_iter().take(n) {
        cache.remove(&pid);
    }
}

/// The start time of `pid` (clock ticks after boot, `/proc/PID/stat` field 22): with the pid,
/// it names one process for its whole life.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// One Go process's figures from one round.
pub struct Figures {
    pub pid: u32,
    pub comm: String,
    pub counts: Counts,
    pub leak_suspects: u64,
    /// Runnable-to-running waits the runtime recorded since the previous round (its own
    /// one-in-eight sample; None on a process's first round or when it cannot be read).
    pub sched_latency: Option<LatencyHistogram>,
}

/// What one round did (for `/metrics`).
pub struct Round {
    pub figures: Vec<Figures>,
    /// Seconds each census took (attach excluded: it is cached), one per process counted.
    pub seconds: Vec<f64>,
    pub round_seconds: f64,
    /// Censuses that failed, by reason (`exited`: the process ended mid-read).
    pub errors: Vec<&'static str>,
    pub go_processes: usize,
    pub not_counted: HashMap<&'static str, usize>,
}

/// The processes of the recent windows, most CPU first, then the Go processes known from
/// earlier (an idle one may be in no recent window, or was asked for over HTTP).
fn candidates(shared: &Shared) -> Vec<(u32, String)> {
    let now = SystemTime::now();
    let from = now.checked_sub(CANDIDATE_LOOKBACK).unwrap_or(now);
    let windows = shared
        .store
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .range(from, now);
    let mut cpu: HashMap<u32, (u64, String, SystemTime)> = HashMap::new();
    for w in &windows {
        for p in w.processes.iter() {
            let e = cpu
                .entry(p.pid)
                .or_insert((0, p.info.comm.clone(), w.start));
            e.0 += p.cpu_samples;
            if w.start >= e.2 {
                e.1 = p.info.comm.clone();
                e.2 = w.start;
            }
        }
    }
    let mut ranked: Vec<(u32, u64, String)> = cpu
        .into_iter()
        .map(|(pid, (samples, comm, _))| (pid, samples, comm))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut list: Vec<(u32, String)> = ranked
        .into_iter()
        .map(|(pid, _, comm)| (pid, comm))
        .collect();
    let listed: std::collections::HashSet<u32> = list.iter().map(|(pid, _)| *pid).collect();
    for pid in shared.go.go_pids() {
        if !listed.contains(&pid) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            list.push((pid, comm));
        }
    }
    list
}

/// One round: up to `goroutine_census_processes` Go processes, most CPU first.
pub fn round(shared: &Shared) -> Round {
    let started = Instant::now();
    let limit = shared.config.goroutine_census_processes;
    let threshold_ns =
        u64::try_from(shared.config.goroutine_leak_threshold.as_nanos()).unwrap_or(u64::MAX);
    shared.go.forget_gone();
    let mut round = Round {
        figures: Vec::new(),
        seconds: Vec::new(),
        round_seconds: 0.0,
        errors: Vec::new(),
        go_processes: 0,
        not_counted: HashMap::new(),
    };
    let mut detections = 0;
    for (pid, comm) in candidates(shared) {
        if round.figures.len() + round.errors.len() >= limit {
            break;
        }
        let known = shared.go.known(pid);
        if known == Some(false) {
            continue;
        }
        if known.is_none() {
            if detections >= NEW_DETECTIONS_PER_ROUND {
                continue;
            }
            detections += 1;
        }
        let process = match shared.go.get(pid) {
            Lookup::Known(Kind::Go(p)) => p,
            Lookup::Known(Kind::NotCounted(_)) | Lookup::Gone => continue,
        };
        let t = Instant::now();
        match process.census() {
            Ok(census) => {
                round.seconds.push(t.elapsed().as_secs_f64());
                round.figures.push(Figures {
                    pid,
                    comm,
                    counts: Counts::of_census(&census),
                    leak_suspects: leak_suspects(&census, threshold_ns),
                    sched_latency: shared.go.sched_latency_since_last(pid),
                });
            }
            Err(e) => round.errors.push(error_reason(&e)),
        }
    }
    let (go, not) = shared.go.tally();
    round.go_processes = go;
    round.not_counted = not;
    round.round_seconds = started.elapsed().as_secs_f64();
    round
}

/// The census thread; stops when told or when the daemon exits.
pub struct CensusThread {
    stop: mpsc::Sender<()>,
}

impl CensusThread {
    /// Starts the periodic census (None when `goroutine_census_interval` is off).
    pub fn spawn(shared: Arc<Shared>) -> std::io::Result<Option<CensusThread>> {
        let Some(period) = shared.config.goroutine_census_interval else {
            return Ok(None);
        };
        let (stop, stop_rx) = mpsc::channel::<()>();
        // The first round comes after one window (it needs stored processes to count),
        // the next ones every period.
        let mut wait = period.min(shared.config.window);
        thread::Builder::new()
            .name("loupe-goroutines".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let r = round(&shared);
                shared.metrics.goroutine_round(&r);
                wait = period;
            })?;
        Ok(Some(CensusThread { stop }))
    }

    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_names_this_process_and_nothing_for_a_missing_one() {
        let me = std::process::id();
        let t = start_time(me).expect("own start time");
        assert_eq!(start_time(me), Some(t));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn this_test_binary_is_remembered_as_not_go_with_its_reason() {
        let go = GoProcesses::default();
        let me = std::process::id();
        match go.get(me) {
            Lookup::Known(Kind::NotCounted(r)) => {
                assert_eq!(r.reason, "not_go");
                assert!(r.message.contains("not a Go program"), "{}", r.message);
            }
            _ => panic!("the test binary is not Go"),
        }
        assert_eq!(go.known(me), Some(false));
        assert!(matches!(go.get(u32::MAX), Lookup::Gone));
    }
}

//! `/metrics`: Prometheus families built with the `prometheus` crate (every family and
//! label is documented in the README, "loupe daemon" / "Metrics").
//!
//! Per-process series exist only for the top N processes by CPU samples of the latest
//! window (`metrics_top_processes`); the others are summed under `pid="other",comm="other"`,
//! so cardinality stays bounded. A process that leaves the top N loses its series (a counter
//! reset if it comes back, which `rate()` handles).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use prometheus::{
    core::{Collector, Desc},
    proto, Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::histogram::LatencyHistogram;

use super::census::Round;
use super::store::{Dropped, StoredWindow};

/// The label value of the aggregate of processes outside the top N.
pub const OTHER: &str = "other";

/// Run-queue histogram bounds: powers of two nanoseconds, 2^10 (1 us) .. 2^34 (17 s).
const RUNQ_BOUND_EXPONENTS: std::ops::RangeInclusive<u32> = 10..=34;

type ProcessLabels = (String, String);

pub struct Metrics {
    registry: Registry,
    cpu_samples: IntCounterVec,
    cpu_seconds: prometheus::CounterVec,
    offcpu_seconds: prometheus::CounterVec,
    runqueue: LatencyHistograms,
    events: IntCounterVec,
    drops: IntCounterVec,
    attach_errors: IntCounterVec,
    collector_enabled: IntGaugeVec,
    symbolization: Histogram,
    rss: IntGauge,
    windows_stored: IntGauge,
    store_bytes: IntGauge,
    windows_dropped: IntCounterVec,
    bpf_map_bytes: IntGauge,
    go: GoFamilies,
    top_n: usize,
    labelled: Mutex<HashSet<ProcessLabels>>,
    dropped_seen: Mutex<Dropped>,
}

impl Metrics {
    pub fn new(top_n: usize) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let process = &["pid", "comm"];
        let m = Metrics {
            cpu_samples: IntCounterVec::new(
                Opts::new(
                    "loupe_cpu_samples_total",
                    "On-CPU stack samples taken, by process",
                ),
                process,
            )?,
            cpu_seconds: prometheus::CounterVec::new(
                Opts::new(
                    "loupe_cpu_seconds_total",
                    "CPU time by process, estimated as samples times the sampling period",
                ),
                process,
            )?,
            offcpu_seconds: prometheus::CounterVec::new(
                Opts::new(
                    "loupe_offcpu_seconds_total",
                    "Time threads spent blocked off-CPU, summed over a process's threads",
                ),
                process,
            )?,
            runqueue: LatencyHistograms::new(
                "loupe_runqueue_latency_seconds",
                "Run-queue latency (wakeup to running), per thread wakeup, by process",
            )?,
            events: IntCounterVec::new(
                Opts::new(
                    "loupe_events_total",
                    "Events the collectors handled, by event",
                ),
                &["event"],
            )?,
            drops: IntCounterVec::new(
                Opts::new("loupe_drops_total", "Samples or events lost, by reason"),
                &["reason"],
            )?,
            attach_errors: IntCounterVec::new(
                Opts::new(
                    "loupe_attach_errors_total",
                    "Collectors that failed to attach at start, by collector",
                ),
                &["collector"],
            )?,
            collector_enabled: IntGaugeVec::new(
                Opts::new(
                    "loupe_collector_enabled",
                    "1 when a collector runs, 0 when the kernel cannot support it",
                ),
                &["collector", "reason"],
            )?,
            symbolization: Histogram::with_opts(
                HistogramOpts::new(
                    "loupe_symbolization_seconds",
                    "Time to symbolize one window, off the collection thread",
                )
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )?,
            rss: IntGauge::new(
                "loupe_resident_memory_bytes",
                "Resident set size of the daemon",
            )?,
            windows_stored: IntGauge::new("loupe_store_windows", "Windows in the profile store")?,
            store_bytes: IntGauge::new(
                "loupe_store_bytes",
                "Estimated bytes held by stored windows (the memory cap counts these)",
            )?,
            windows_dropped: IntCounterVec::new(
                Opts::new(
                    "loupe_store_windows_dropped_total",
                    "Windows removed from the store, by reason (retention, memory)",
                ),
                &["reason"],
            )?,
            bpf_map_bytes: IntGauge::new(
                "loupe_bpf_map_bytes",
                "Kernel memory of the daemon's BPF maps",
            )?,
            go: GoFamilies::new()?,
            top_n,
            labelled: Mutex::new(HashSet::new()),
            dropped_seen: Mutex::new(Dropped::default()),
            registry,
        };
        let r = &m.registry;
        r.register(Box::new(m.cpu_samples.clone()))?;
        r.register(Box::new(m.cpu_seconds.clone()))?;
        r.register(Box::new(m.offcpu_seconds.clone()))?;
        r.register(Box::new(m.runqueue.clone()))?;
        r.register(Box::new(m.events.clone()))?;
        r.register(Box::new(m.drops.clone()))?;
        r.register(Box::new(m.attach_errors.clone()))?;
        r.register(Box::new(m.collector_enabled.clone()))?;
        r.register(Box::new(m.symbolization.clone()))?;
        r.register(Box::new(m.rss.clone()))?;
        r.register(Box::new(m.windows_stored.clone()))?;
        r.register(Box::new(m.store_bytes.clone()))?;
        r.register(Box::new(m.windows_dropped.clone()))?;
        r.register(Box::new(m.bpf_map_bytes.clone()))?;
        m.go.register(r)?;
        for reason in ["retention", "memory"] {
            m.windows_dropped.with_label_values(&[reason]);
        }
        Ok(m)
    }

    pub fn collector(&self, name: &str, enabled: bool, reason: &str) {
        self.collector_enabled
            .with_label_values(&[name, reason])
            .set(i64::from(enabled));
        if !enabled {
            self.attach_errors.with_label_values(&[name]).inc();
        } else {
            self.attach_errors.with_label_values(&[name]);
        }
    }

    pub fn symbolized(&self, seconds: f64) {
        self.symbolization.observe(seconds);
    }

    /// Adds one window's figures.
    pub fn add_window(&self, window: &StoredWindow, period_seconds: f64) {
        for (name, value) in &window.counters {
            match name.strip_prefix("drop_") {
                Some(reason) => self.drops.with_label_values(&[reason]).inc_by(*value),
                None => self.events.with_label_values(&[name]).inc_by(*value),
            }
        }
        let mut ranked: Vec<(u32, u64)> = window
            .processes
            .iter()
            .map(|p| (p.pid, p.cpu_samples))
            .collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: HashSet<u32> = ranked
            .iter()
            .take(self.top_n)
            .filter(|(_, samples)| *samples > 0)
            .map(|(pid, _)| *pid)
            .collect();
        let mut now_labelled = HashSet::new();
        let mut runq: HashMap<ProcessLabels, LatencyHistogram> = HashMap::new();
        for p in window.processes.iter() {
            let labels = if top.contains(&p.pid) {
                (p.pid.to_string(), p.info.comm.clone())
            } else {
                (OTHER.to_string(), OTHER.to_string())
            };
            let l = [labels.0.as_str(), labels.1.as_str()];
            self.cpu_samples.with_label_values(&l).inc_by(p.cpu_samples);
            self.cpu_seconds
                .with_label_values(&l)
                .inc_by(p.cpu_samples as f64 * period_seconds);
            if let Some(ns) = p.offcpu_ns {
                self.offcpu_seconds
                    .with_label_values(&l)
                    .inc_by(ns as f64 / 1e9);
            }
            let waits = p.runqueue();
            if waits.count > 0 {
                runq.entry(labels.clone()).or_default().merge(&waits);
            }
            now_labelled.insert(labels);
        }
        self.runqueue.add(runq);
        let mut labelled = self.labelled.lock().unwrap_or_else(|e| e.into_inner());
        for gone in labelled.difference(&now_labelled) {
            if gone.0 == OTHER {
                continue;
            }
            let l = [gone.0.as_str(), gone.1.as_str()];
            let _ = self.cpu_samples.remove_label_values(&l);
            let _ = self.cpu_seconds.remove_label_values(&l);
            let _ = self.offcpu_seconds.remove_label_values(&l);
            self.runqueue.remove(gone);
        }
        *labelled = now_labelled;
    }

    /// One goroutine census round's figures: the per-process series are replaced.
    pub fn goroutine_round(&self, round: &Round) {
        self.go.set(round);
    }

    /// Store figures, set after each push.
    pub fn store(&self, windows: usize, bytes: u64, dropped: Dropped) {
        self.windows_stored.set(windows as i64);
        self.store_bytes.set(bytes as i64);
        let mut seen = self.dropped_seen.lock().unwrap_or_else(|e| e.into_inner());
        self.windows_dropped
            .with_label_values(&["retention"])
            .inc_by(dropped.expired.saturating_sub(seen.expired));
        self.windows_dropped
            .with_label_values(&["memory"])
            .inc_by(dropped.memory.saturating_sub(seen.memory));
        *seen = dropped;
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        self.rss.set(rss_bytes() as i64);
        self.bpf_map_bytes.set(bpf_map_bytes() as i64);
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Why a census failed, every value the `reason` label of `loupe_go_census_errors_total` takes.
const GO_CENSUS_ERRORS: [&str; 4] = ["exited", "unreadable", "denied", "unsupported"];

/// The goroutine census families (`census`): per Go process, replaced each round, so a
/// process that exits or leaves the top N loses its series.
struct GoFamilies {
    goroutines: IntGaugeVec,
    waiting: IntGaugeVec,
    leak_suspects: IntGaugeVec,
    census_seconds: Histogram,
    round_seconds: prometheus::Gauge,
    errors: IntCounterVec,
    processes: IntGaugeVec,
    sched_latency: LatencyHistograms,
    /// Label values set by the last round, per family, to remove what this one does not set.
    set: Mutex<[HashSet<Vec<String>>; 3]>,
}

impl GoFamilies {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(GoFamilies {
            goroutines: IntGaugeVec::new(
                Opts::new(
                    "loupe_go_goroutines",
                    "Goroutines of a Go process (as runtime.NumGoroutine counts them), by state",
                ),
                &["pid", "comm", "state"],
            )?,
            waiting: IntGaugeVec::new(
                Opts::new(
                    "loupe_go_goroutines_waiting",
                    "Waiting goroutines of a Go process, by the runtime's wait reason",
                ),
                &["pid", "comm", "wait_reason"],
            )?,
            leak_suspects: IntGaugeVec::new(
                Opts::new(
                    "loupe_go_goroutines_leak_suspects",
                    "Goroutines of a Go process blocked longer than goroutine_leak_threshold",
                ),
                &["pid", "comm"],
            )?,
            census_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "loupe_go_census_seconds",
                    "Time to take one goroutine census of one Go process (reading its memory)",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ]),
            )?,
            round_seconds: prometheus::Gauge::new(
                "loupe_go_census_round_seconds",
                "Time the latest goroutine census round took, over every process it counted",
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    "loupe_go_census_errors_total",
                    "Goroutine censuses that failed, by reason",
                ),
                &["reason"],
            )?,
            processes: IntGaugeVec::new(
                Opts::new(
                    "loupe_go_processes",
                    "Processes the goroutine census has looked at, by what they are",
                ),
                &["kind"],
            )?,
            sched_latency: LatencyHistograms::new(
                "loupe_go_sched_latency_seconds",
                "Goroutine scheduling latency (runnable to running) of a Go process, from the \
                 runtime's own histogram: it times one state change in eight, and sums are \
                 taken at bucket midpoints",
            )?,
            set: Mutex::new(Default::default()),
        })
    }

    fn register(&self, r: &Registry) -> Result<(), prometheus::Error> {
        r.register(Box::new(self.goroutines.clone()))?;
        r.register(Box::new(self.waiting.clone()))?;
        r.register(Box::new(self.leak_suspects.clone()))?;
        r.register(Box::new(self.census_seconds.clone()))?;
        r.register(Box::new(self.round_seconds.clone()))?;
        r.register(Box::new(self.errors.clone()))?;
        r.register(Box::new(self.processes.clone()))?;
        r.register(Box::new(self.sched_latency.clone()))?;
        for reason in GO_CENSUS_ERRORS {
            self.errors.with_label_values(&[reason]);
        }
        Ok(())
    }

    fn set(&self, round: &Round) {
        let mut now: [HashSet<Vec<String>>; 3] = Default::default();
        for f in &round.figures {
            let pid = f.pid.to_string();
            for (state, n) in &f.counts.by_state {
                let l = vec![pid.clone(), f.comm.clone(), state.clone()];
                self.goroutines.with_label_values(&l).set(*n as i64);
                now[0].insert(l);
            }
            for (reason, n) in &f.counts.by_wait_reason {
                let l = vec![pid.clone(), f.comm.clone(), reason.clone()];
                self.waiting.with_label_values(&l).set(*n as i64);
                now[1].insert(l);
            }
            if let Some(h) = &f.sched_latency {
                let labels = (pid.clone(), f.comm.clone());
                self.sched_latency.add(HashMap::from([(labels, h.clone())]));
            }
            let l = vec![pid, f.comm.clone()];
            self.leak_suspects
                .with_label_values(&l)
                .set(f.leak_suspects as i64);
            now[2].insert(l);
        }
        let mut set = self.set.lock().unwrap_or_else(|e| e.into_inner());
        for (i, family) in [&self.goroutines, &self.waiting, &self.leak_suspects]
            .into_iter()
            .enumerate()
        {
            for gone in set[i].difference(&now[i]) {
                let l: Vec<&str> = gone.iter().map(String::as_str).collect();
                let _ = family.remove_label_values(&l);
            }
        }
        // A process counted no more (exited, or out of the top) loses its histogram too.
        for gone in set[2].difference(&now[2]) {
            if let [pid, comm] = gone.as_slice() {
                self.sched_latency.remove(&(pid.clone(), comm.clone()));
            }
        }
        *set = now;
        for s in &round.seconds {
            self.census_seconds.observe(*s);
        }
        self.round_seconds.set(round.round_seconds);
        for reason in &round.errors {
            self.errors.with_label_values(&[reason]).inc();
        }
        self.processes.reset();
        self.processes
            .with_label_values(&["go"])
            .set(round.go_processes as i64);
        for (kind, n) in &round.not_counted {
            self.processes.with_label_values(&[kind]).set(*n as i64);
        }
    }
}

/// Cumulative latency histograms by process (`{pid,comm}`), exported from loupe's own
/// buckets: `loupe_runqueue_latency_seconds` (exact count and sum) and
/// `loupe_go_sched_latency_seconds`.
#[derive(Clone)]
struct LatencyHistograms {
    desc: Desc,
    state: std::sync::Arc<Mutex<HashMap<ProcessLabels, Cumulative>>>,
}

#[derive(Default)]
struct Cumulative {
    /// Values below 2^e ns for each bound exponent e, then everything.
    below: Vec<u64>,
    count: u64,
    sum_ns: u64,
}

impl LatencyHistograms {
    fn new(name: &str, help: &str) -> Result<Self, prometheus::Error> {
        Ok(LatencyHistograms {
            desc: Desc::new(
                name.into(),
                help.into(),
                vec!["pid".into(), "comm".into()],
                HashMap::new(),
            )?,
            state: Default::default(),
        })
    }

    fn add(&self, windows: HashMap<ProcessLabels, LatencyHistogram>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (labels, h) in windows {
            let c = state.entry(labels).or_insert_with(|| Cumulative {
                below: vec![0; RUNQ_BOUND_EXPONENTS.count()],
                ..Cumulative::default()
            });
            for (end_exclusive, n) in h.nonzero_buckets() {
                for (slot, e) in c.below.iter_mut().zip(RUNQ_BOUND_EXPONENTS) {
                    if end_exclusive <= 1u64 << e {
                        *slot += n;
                    }
                }
            }
            c.count += h.count;
            c.sum_ns = c.sum_ns.saturating_add(h.sum_ns);
        }
    }

    fn remove(&self, labels: &ProcessLabels) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.remove(labels);
    }
}

impl Collector for LatencyHistograms {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        let mut metrics = Vec::new();
        let mut keys: Vec<&ProcessLabels> = state.keys().collect();
        keys.sort();
        for key in keys {
            let c = &state[key];
            let mut h = proto::Histogram::default();
            h.set_sample_count(c.count);
            h.set_sample_sum(c.sum_ns as f64 / 1e9);
            let buckets = c
                .below
                .iter()
                .zip(RUNQ_BOUND_EXPONENTS)
                .map(|(n, e)| {
                    let mut b = proto::Bucket::default();
                    b.set_cumulative_count(*n);
                    b.set_upper_bound((1u64 << e) as f64 / 1e9);
                    b
                })
                .collect();
            h.set_bucket(buckets);
            let mut pid = proto::LabelPair::default();
            pid.set_name("pid".into());
            pid.set_value(key.0.clone());
            let mut comm = proto::LabelPair::default();
            comm.set_name("comm".into());
            comm.set_value(key.1.clone());
            let mut m = proto::Metric::from_label(vec![comm, pid]);
            m.set_histogram(h);
            metrics.push(m);
        }
        family.set_metric(metrics);
        vec![family]
    }
}

/// Resident set size of this process.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Kernel memory of this process's BPF maps (`memlock` of each map descriptor).
pub fn bpf_map_bytes() -> u64 {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    fds.flatten()
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-map")
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{
        attribution::ProcessInfo,
        census::{Figures, Round},
        process_table::ProcessTable,
        store::ProcessFigures,
    };
    use std::{
        collections::BTreeMap,
        sync::Arc,
        time::{Duration, SystemTime},
    };

    fn figures(comm: &str, cpu: u64, runq: &[u64]) -> ProcessFigures {
        let mut h = LatencyHistogram::default();
        for &v in runq {
            h.record(v);
        }
        ProcessFigures {
            info: Arc::new(ProcessInfo {
                comm: comm.into(),
                ..ProcessInfo::default()
            }),
            cpu_samples: cpu,
            offcpu_ns: Some(2_000_000_000),
            runqueue: h,
            exited: false,
        }
    }

    fn go_round(figures: Vec<Figures>, errors: Vec<&'static str>) -> Round {
        Round {
            figures,
            seconds: vec![0.004],
            round_seconds: 0.005,
            errors,
            go_processes: 1,
            not_counted: HashMap::from([("not_go", 7)]),
        }
    }

    fn go_figures(pid: u32, states: &[(&str, u64)], reasons: &[(&str, u64)]) -> Figures {
        let own = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        Figures {
            pid,
            comm: "server".into(),
            counts: crate::goroutines::report::Counts {
                live: states.iter().map(|(_, n)| n).sum(),
                by_state: own(states),
                by_wait_reason: own(reasons),
            },
            leak_suspects: 3,
            sched_latency: Some({
                let mut h = LatencyHistogram::default();
                h.record(300_000);
                h.record(5_000_000);
                h
            }),
        }
    }

    #[test]
    fn goroutine_series_are_replaced_each_round() {
        let m = Metrics::new(5).expect("metrics");
        m.goroutine_round(&go_round(
            vec![go_figures(
                7,
                &[("waiting", 10), ("running", 1)],
                &[("chan receive", 6), ("select", 4)],
            )],
            vec![],
        ));
        let text = m.render().expect("render");
        for want in [
            "loupe_go_goroutines{comm=\"server\",pid=\"7\",state=\"waiting\"} 10",
            "loupe_go_goroutines_waiting{comm=\"server\",pid=\"7\",wait_reason=\"chan receive\"} 6",
            "loupe_go_goroutines_leak_suspects{comm=\"server\",pid=\"7\"} 3",
            "loupe_go_processes{kind=\"not_go\"} 7",
            "loupe_go_census_seconds_count 1",
            "loupe_go_census_errors_total{reason=\"exited\"} 0",
            "loupe_go_sched_latency_seconds_count{comm=\"server\",pid=\"7\"} 2",
            "loupe_go_sched_latency_seconds_sum{comm=\"server\",pid=\"7\"} 0.0053",
            "loupe_go_sched_latency_seconds_bucket{comm=\"server\",pid=\"7\",le=\"0.000524288\"} 1",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Next round: process 7 exited mid-read; its series go, the error is counted.
        m.goroutine_round(&go_round(vec![], vec!["exited"]));
        let text = m.render().expect("render");
        assert!(!text.contains("pid=\"7\""), "{text}");
        assert!(
            text.contains("loupe_go_census_errors_total{reason=\"exited\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn top_processes_get_series_and_the_rest_is_other() {
        let m = Metrics::new(1).expect("metrics");
        let mut processes = HashMap::new();
        processes.insert(10, figures("busy", 50, &[1_500, 3_000_000]));
        processes.insert(20, figures("idle", 1, &[100]));
        processes.insert(30, figures("idle2", 0, &[]));
        let window = StoredWindow {
            start: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(10),
            profiles: BTreeMap::new(),
            processes: ProcessTable::pack(processes),
            counters: vec![
                ("drop_ringbuf_full".into(), 2),
                ("samples_counted".into(), 51),
            ],
            bytes: 0,
        };
        m.add_window(&window, 0.01);
        let text = m.render().expect("render");
        assert!(
            text.contains("loupe_cpu_samples_total{comm=\"busy\",pid=\"10\"} 50"),
            "{text}"
        );
        assert!(
            text.contains("loupe_cpu_samples_total{comm=\"other\",pid=\"other\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("loupe_offcpu_seconds_total{comm=\"other\",pid=\"other\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("loupe_drops_total{reason=\"ringbuf_full\"} 2"),
            "{text}"
        );
        // 1.5 us is below 2^11 ns; 3 ms below 2^22 ns; count and sum are exact.
        assert!(text.contains("loupe_runqueue_latency_seconds_bucket{comm=\"busy\",pid=\"10\",le=\"0.000002048\"} 1"), "{text}");
        assert!(
            text.contains(
                "loupe_runqueue_latency_seconds_bucket{comm=\"busy\",pid=\"10\",le=\"+Inf\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("loupe_runqueue_latency_seconds_sum{comm=\"busy\",pid=\"10\"} 0.0030015"),
            "{text}"
        );
        // The next window: busy is gone, its series too.
        let mut processes = HashMap::new();
        processes.insert(20, figures("idle", 5, &[]));
        m.add_window(
            &StoredWindow {
                processes: ProcessTable::pack(processes),
                ..window
            },
            0.01,
        );
        let text = m.render().expect("render");
        assert!(!text.contains("pid=\"10\""), "{text}");
        assert!(
            text.contains("loupe_cpu_samples_total{comm=\"idle\",pid=\"20\"} 5"),
            "{text}"
        );
    }
}

//! `loupe daemon`: continuous host-wide collection into an in-memory store of windows,
//! served over HTTP (`server/`): the JSON API of the web UI, Go-style `/debug/pprof`,
//! Prometheus `/metrics` and the embedded UI.
//!
//! Threads: the engine's collection thread (`loupe-collect`), the window ticker and the
//! symbolizer (`windows`), the goroutine census (`census`), and the HTTP runtime. A collector the kernel cannot run is left
//! out with its reason; the others run.

pub mod attribution;
pub mod census;
pub mod config;
pub mod metrics;
pub mod process_table;
pub mod store;
pub mod stored;
pub mod windows;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{mpsc, Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context};

use crate::{
    bpf,
    collectors::{cpu::UnwindMode, targets::TargetSpec},
    engine::{Capability, Session, SessionConfig},
    profile::ProfileType,
};

pub use config::Config;
use metrics::Metrics;
use store::{WindowData, WindowStore};

/// How long shutdown waits for the engine to detach before exiting anyway (process exit
/// closes every descriptor, which detaches whatever is left).
const STOP_DEADLINE: Duration = Duration::from_millis(1200);

/// One collector as `/api/v1/status`, `/metrics` and the UI show it.
#[derive(Clone, Debug)]
pub struct CollectorState {
    pub name: &'static str,
    pub enabled: bool,
    /// What it runs (enabled) or why it does not (disabled).
    pub detail: String,
}

/// What the HTTP handlers and the window threads share.
pub struct Shared {
    pub config: Config,
    pub started: SystemTime,
    pub hostname: String,
    pub collectors: Vec<CollectorState>,
    pub cpu_enabled: bool,
    pub sched_enabled: bool,
    pub store: RwLock<WindowStore>,
    pub metrics: Metrics,
    /// Which processes are Go (and their goroutine tables), for the census and the API.
    pub go: census::GoProcesses,
    /// Every counter since start, by name (`drop_*` are losses).
    pub counters: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    pub fn new(config: Config, collectors: Vec<CollectorState>) -> anyhow::Result<Shared> {
        let enabled = |name: &str| collectors.iter().any(|c| c.name == name && c.enabled);
        let metrics = Metrics::new(config.metrics_top_processes)?;
        for c in &collectors {
            let reason = if c.enabled { "" } else { c.detail.as_str() };
            metrics.collector(c.name, c.enabled, reason);
        }
        Ok(Shared {
            cpu_enabled: enabled("cpu"),
            sched_enabled: enabled("runqueue"),
            store: RwLock::new(WindowStore::new(config.retention, config.store_max_bytes)),
            metrics,
            go: census::GoProcesses::default(),
            counters: Mutex::new(BTreeMap::new()),
            started: SystemTime::now(),
            hostname: hostname(),
            collectors,
            config,
        })
    }

    /// The profile types stored for each window.
    pub fn profile_types(&self) -> Vec<ProfileType> {
        let mut types = Vec::new();
        if self.cpu_enabled {
            types.push(ProfileType::Cpu);
        }
        if self.offcpu_enabled() {
            types.push(ProfileType::OffCpu);
        }
        types
    }

    pub fn offcpu_enabled(&self) -> bool {
        self.collectors
            .iter()
            .any(|c| c.name == "offcpu" && c.enabled)
    }

    /// CPU time one sample stands for.
    pub fn cpu_period_ns(&self) -> u64 {
        1_000_000_000 / self.config.cpu_frequency_hz.max(1)
    }

    /// Stores a symbolized window and accounts for it.
    pub fn add_window(&self, window: WindowData) {
        let stored = {
            let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
            let stored = store.push(window, SystemTime::now());
            self.metrics
                .store(store.len(), store.bytes(), store.dropped);
            stored
        };
        self.metrics
            .add_window(&stored, self.cpu_period_ns() as f64 / 1e9);
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        for (name, value) in &stored.counters {
            let slot = counters.entry(name.clone()).or_default();
            *slot = slot.saturating_add(*value);
        }
        drop(counters);
        return_freed_memory();
    }
}

/// Gives the pages malloc holds free back to the kernel. Each window builds and frees a
/// symbolized profile several times the size of what is stored; glibc keeps such freed
/// memory in its heaps (one per thread that allocated it) unless asked, and the daemon's
/// RSS would then grow with the largest windows seen rather than with what it stores.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims glibc's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub fn run(listen: Option<String>, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path.as_deref(), listen.as_deref())?;
    if !bpf::is_privileged() {
        bail!("loupe needs root (or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN): run it with sudo");
    }
    raise_open_files_limit();
    let (session, collectors) = start_session(&config)?;
    for c in &collectors {
        eprintln!(
            "loupe: collector {:<9} {}: {}",
            c.name,
            if c.enabled { "on " } else { "OFF" },
            c.detail
        );
    }
    let shared = Arc::new(Shared::new(config.clone(), collectors)?);
    let session = Arc::new(Mutex::new(Some(session)));
    let windows = windows::WindowThreads::spawn(shared.clone(), session.clone())
        .context("starting the window threads")?;
    let census = census::CensusThread::spawn(shared.clone())
        .context("starting the goroutine census thread")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loupe-http")
        .enable_all()
        .build()?;
    let served: anyhow::Result<&'static str> = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        eprintln!(
            "loupe: daemon listening on http://{}/ (windows of {}, kept {})",
            config.listen,
            humantime::format_duration(config.window),
            humantime::format_duration(config.retention)
        );
        let app = crate::server::router(shared.clone());
        tokio::select! {
            result = axum::serve(listener, app) => {
                result.context("serving HTTP")?;
                Ok("the server stopped")
            }
            signal = shutdown_signal() => Ok(signal),
        }
    });
    if let Some(c) = &census {
        c.stop();
    }
    let why = match served {
        Ok(why) => why,
        Err(e) => {
            stop(&windows, session);
            return Err(e);
        }
    };
    eprintln!("loupe: {why}: detaching");
    let stopping = std::time::Instant::now();
    stop(&windows, session);
    eprintln!("loupe: stopped in {:.0?}", stopping.elapsed());
    // Live profiles still running and HTTP connections end with the process; their
    // descriptors (and so their BPF links) close with it.
    std::process::exit(0)
}

/// Stops taking windows, then stops the engine (detaching its programs), within a deadline.
fn stop(windows: &windows::WindowThreads, session: Arc<Mutex<Option<Session>>>) {
    windows.stop();
    let (done_tx, done_rx) = mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("loupe-stop".into())
        .spawn(move || {
            let taken = session.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(s) = taken {
                let _ = s.stop();
            }
            let _ = done_tx.send(());
        });
    if done_rx.recv_timeout(STOP_DEADLINE).is_err() {
        eprintln!("loupe: the engine did not stop in time; exiting anyway");
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Starts the host-wide session with every capability the kernel supports; a capability
/// that cannot attach is reported disabled with its error, and the rest run.
fn start_session(config: &Config) -> anyhow::Result<(Session, Vec<CollectorState>)> {
    let cpu = Capability::Cpu {
        frequency_hz: config.cpu_frequency_hz,
        unwind: UnwindMode::Auto,
    };
    let sched = Capability::Sched {
        offcpu_stacks: config.offcpu_stacks,
    };
    let start = |capabilities: Vec<Capability>| {
        Session::start(SessionConfig {
            targets: TargetSpec::All,
            capabilities,
        })
    };
    let (session, cpu_error, sched_error) = match start(vec![cpu.clone(), sched.clone()]) {
        Ok(s) => (s, None, None),
        Err(both) => {
            log::info!("starting every collector failed ({both}); trying each alone");
            // Try each alone to find which one the kernel refuses.
            let cpu_alone = start(vec![cpu.clone()]).err().map(|e| e.to_string());
            let sched_alone = start(vec![sched.clone()]).err().map(|e| e.to_string());
            let working: Vec<Capability> = [(cpu, &cpu_alone), (sched, &sched_alone)]
                .into_iter()
                .filter(|(_, err)| err.is_none())
                .map(|(c, _)| c)
                .collect();
            if working.is_empty() {
                bail!(
                    "no collector can run: cpu: {}; sched: {}",
                    cpu_alone.unwrap_or_else(|| both.to_string()),
                    sched_alone.unwrap_or_else(|| both.to_string())
                );
            }
            (start(working)?, cpu_alone, sched_alone)
        }
    };
    let cpus = online_cpus();
    let state = |name, error: &Option<String>, detail: String| CollectorState {
        name,
        enabled: error.is_none(),
        detail: error.clone().unwrap_or(detail),
    };
    let offcpu_error = match (&sched_error, config.offcpu_stacks) {
        (Some(e), _) => Some(e.clone()),
        (None, false) => {
            Some("off-CPU stacks are off in the config (offcpu_stacks = false)".into())
        }
        (None, true) => None,
    };
    Ok((
        session,
        vec![
            state(
                "cpu",
                &cpu_error,
                format!("{} Hz on {cpus} CPUs", config.cpu_frequency_hz),
            ),
            state(
                "offcpu",
                &offcpu_error,
                "sched_switch (tp_btf): time blocked, by the stack that blocked".into(),
            ),
            state(
                "runqueue",
                &sched_error,
                "sched_wakeup, sched_switch (tp_btf): run-queue latency, per-thread totals".into(),
            ),
        ],
    ))
}

fn online_cpus() -> i64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Modules stay open (to name exited processes), so a busy host needs many descriptors:
/// raise the soft limit to the hard one.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                log::warn!(
                    "cannot raise the open files limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

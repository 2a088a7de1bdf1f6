//! The collection engine: one session drives every capability for `loupe profile`,
//! `loupe stat` and the daemon alike.
//!
//! A [`Session`] runs its own collection thread, which owns the loaded BPF object, the
//! target tracking, the process table and the store. It polls the shared event ring buffer,
//! dispatches each record by kind (process lifecycle to the target tracking, samples to the
//! collector that [handles](Collector::handles) them), and on every tick lets collectors
//! drain their in-kernel aggregates and evicts processes that exited; a window taken is
//! sealed first (collectors close and drain their in-kernel maps), so it ends when taken
//! rather than up to a tick later. Front-ends talk to it through the [`Session`] handle:
//! they choose targets and durations, take finished [`Window`]s and symbolize and render
//! them on their own threads, so an HTTP request or a slow symbolization never stalls
//! sampling.

pub mod collector;
mod map_sizes;
pub mod store;

use std::{
    collections::{HashMap, HashSet},
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use loupe_ebpf::targets::{ProcessEvent, EVENT_PROCESS_EXEC, EVENT_PROCESS_EXIT};

pub use collector::{Collector, Context, Feature, FeatureKind};
pub use store::{HistogramKey, Store, Window};

use crate::{
    bpf::{self, BpfError},
    collectors::{
        self,
        cpu::{CpuCollector, UnwindMode},
        sched::{SchedEngineCollector, SchedOptions},
        targets::{TargetSpec, Targets},
    },
    process::ProcessTable,
    profile::ProfileType,
};

/// How often in-kernel aggregates are drained and exited processes evicted.
pub const TICK: Duration = Duration::from_millis(250);

/// How often the ring buffer is drained when nothing woke us. Samples do not wake the reader
/// (that would phase-lock it to the sampling timer and bias the profile; see the kernel's
/// `sample_wakeup`), so this bounds how long a short-lived process's late mappings can wait.
const DRAIN_EVERY: Duration = Duration::from_millis(40);

/// When a process's mappings are read again after its exec: by then the dynamic loader has
/// mapped its libraries, which a process shorter than a drain interval may not live to have
/// read on demand.
const REREAD_AFTER_EXEC: Duration = Duration::from_millis(10);

/// Ticks an exited process is kept after its exit event, so samples still in flight for it
/// (in-kernel counts drained on later ticks) resolve against its mappings.
const EXITED_GRACE_TICKS: u64 = 3;

/// How long a window boundary waits for programs still writing the closed maps.
const SEAL_GRACE: Duration = Duration::from_millis(2);

/// A capability to run, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Sampled on-CPU stacks.
    Cpu {
        frequency_hz: u64,
        unwind: UnwindMode,
    },
    /// Scheduling: per-thread totals and run-queue histograms, and off-CPU time by stack
    /// when `offcpu_stacks`.
    Sched { offcpu_stacks: bool },
    /// Goroutine events of Go processes: uprobes on each one's runtime, at the probe points
    /// found in its executable; `command`: those of the command to launch, attached when it
    /// exists and before it runs (see [`Session::command_started`]).
    GoroutineEvents {
        targets: Vec<(u32, crate::goroutines::probes::ProbePoints)>,
        command: Option<crate::goroutines::probes::ProbePoints>,
    },
    /// With `Sched { offcpu_stacks: true }`: also count each off-CPU stack's blocks (a
    /// `Lock`-typed profile of blocks and blocked time), as `loupe debug-sched` reports them.
    OffCpuBlockCounts,
}

/// Every capability's kernel features, by capability name (`loupe check` lists them).
pub fn features() -> Vec<(&'static str, &'static [Feature])> {
    vec![
        ("targets", &collectors::targets::FEATURES),
        ("cpu", &collectors::cpu::FEATURES),
        ("sched", &collectors::sched::FEATURES),
        ("goroutines", &collectors::goroutines::FEATURES),
    ]
}

/// What a session observes and collects.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub targets: TargetSpec,
    pub capabilities: Vec<Capability>,
}

/// Live figures a front-end may show while collecting.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Primary-value totals of the current window, per profile type.
    pub totals: std::collections::BTreeMap<ProfileType, u64>,
    /// For `TargetSpec::Pids`: how many of the given processes are still alive.
    pub targets_alive: usize,
    /// State counts, to show that state stays bounded.
    pub processes: usize,
    pub modules: usize,
    pub stacks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error("the collection thread stopped unexpectedly")]
    ThreadGone,
    #[error("cannot start the collection thread: {0}")]
    Spawn(std::io::Error),
    #[error("cannot create the wake-up descriptor: {0}")]
    Wake(std::io::Error),
}

enum Control {
    /// End the current window and start the next; reply with the finished one.
    TakeWindow(mpsc::Sender<Window>),
    /// A launched command exists: stop adopting loupe's own children.
    CommandSpawned(mpsc::Sender<()>),
    /// The command to launch was forked and waits before its exec: attach what needs its pid.
    CommandStarted(u32, mpsc::Sender<Result<(), BpfError>>),
    /// Observe (true) or stop observing (false) a process.
    Target(u32, bool, mpsc::Sender<Result<(), BpfError>>),
    /// Drain everything and stop; reply with the last window.
    Stop(mpsc::Sender<Window>),
}

/// Handle to a running collection session. Dropping it stops the session and detaches
/// every program.
pub struct Session {
    control: mpsc::Sender<Control>,
    wake: Arc<OwnedFd>,
    status: Arc<Mutex<Status>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Whether a capability must attach to the launched command between its fork and its
    /// exec (so the front-end holds it there and calls [`Session::command_started`]).
    attaches_before_exec: bool,
}

impl Session {
    /// Loads and attaches everything `config` asks for; returns once collection runs, or
    /// with the reason it cannot.
    pub fn start(config: SessionConfig) -> Result<Session, EngineError> {
        // SAFETY: plain syscall; the descriptor is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(EngineError::Wake(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor we own.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let status = Arc::new(Mutex::new(Status::default()));
        let attaches_before_exec = config.capabilities.iter().any(|c| {
            matches!(
                c,
                Capability::GoroutineEvents {
                    command: Some(_),
                    ..
                }
            )
        });
        let (control, control_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_wake = wake.clone();
        let thread_status = status.clone();
        let thread = thread::Builder::new()
            .name("loupe-collect".into())
            .spawn(move || match Engine::attach(&config) {
                Ok(engine) => {
                    raise_priority();
                    // Status first: a front-end polling it as soon as we are ready must
                    // not see the default (no live targets: "the target exited").
                    engine.publish(&thread_status);
                    let _ = ready_tx.send(Ok(()));
                    engine.run(control_rx, &thread_wake, &thread_status);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(EngineError::Spawn)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Session {
                control,
                wake,
                status,
                thread: Some(thread),
                attaches_before_exec,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e.into())
            }
            Err(_) => Err(EngineError::ThreadGone),
        }
    }

    fn send<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Control) -> Result<T, EngineError> {
        let (tx, rx) = mpsc::channel();
        self.control
            .send(make(tx))
            .map_err(|_| EngineError::ThreadGone)?;
        wake(&self.wake);
        rx.recv().map_err(|_| EngineError::ThreadGone)
    }

    /// Ends the current window and starts the next without losing a sample in between.
    pub fn take_window(&self) -> Result<Window, EngineError> {
        self.send(Control::TakeWindow)
    }

    /// Tells the engine the launched command now exists (see `TargetSpec::Command`).
    pub fn command_spawned(&self) -> Result<(), EngineError> {
        self.send(Control::CommandSpawned)
    }

    /// Whether the launched command must be held between its fork and its exec until
    /// [`Session::command_started`] returns.
    pub fn attaches_before_exec(&self) -> bool {
        self.attaches_before_exec
    }

    /// The command to launch is forked (pid `pid`) and waits before its exec: attaches what
    /// must see it from its first instruction.
    pub fn command_started(&self, pid: u32) -> Result<(), EngineError> {
        Ok(self.send(|tx| Control::CommandStarted(pid, tx))??)
    }

    /// Starts observing process `pid` (with its threads) while running.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for the node daemon's API; tested in live_tests.rs"
        )
    )]
    pub fn add_target(&self, pid: u32) -> Result<(), EngineError> {
        Ok(self.send(|tx| Control::Target(pid, true, tx))??)
    }

    /// Stops observing process `pid`.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "for the node daemon's API; tested in live_tests.rs"
        )
    )]
    pub fn remove_target(&self, pid: u32) -> Result<(), EngineError> {
        Ok(self.send(|tx| Control::Target(pid, false, tx))??)
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Drains what the kernel still holds, detaches every program, and returns the last window.
    pub fn stop(mut self) -> Result<Window, EngineError> {
        let window = self.send(Control::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        window
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let (tx, _rx) = mpsc::channel();
            let _ = self.control.send(Control::Stop(tx));
            wake(&self.wake);
            let _ = thread.join();
        }
    }
}

fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd we own.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

fn drain_wake(fd: &OwnedFd) {
    let mut value: u64 = 0;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd we own.
    unsafe { libc::read(fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
}

/// The collection thread's state.
struct Engine {
    /// Keeps the programs attached and the maps alive; dropped last.
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    targets: Targets,
    collectors: Vec<Box<dyn Collector>>,
    processes: ProcessTable,
    store: Store,
    /// The processes named by `TargetSpec::Pids` that have not exited.
    explicit_alive: HashSet<u32>,
    /// Counters at the last window boundary, so each window reports its own.
    counters_at_window_start: HashMap<String, u64>,
    tick: u64,
    /// Exit events seen (process lifecycle is the engine's, not a collector's).
    exits_seen: u64,
    tick_errors: u64,
    /// Processes to read again shortly after their exec, oldest first.
    rereads: std::collections::VecDeque<(Instant, u32)>,
}

impl Engine {
    fn attach(config: &SessionConfig) -> Result<Engine, BpfError> {
        let sizes = map_sizes::map_sizes(&config.capabilities, bpf::possible_cpus()?);
        let mut ebpf = bpf::load_sized(&sizes)?;
        let targets = Targets::attach(&mut ebpf, &config.targets)?;
        let events = collectors::take_map(&mut ebpf, "EVENTS")?;
        let mut attached: Vec<Box<dyn Collector>> = Vec::new();
        for capability in &config.capabilities {
            match capability {
                Capability::Cpu {
                    frequency_hz,
                    unwind,
                } => attached.push(Box::new(CpuCollector::attach(
                    &mut ebpf,
                    *frequency_hz,
                    *unwind,
                )?)),
                Capability::Sched { offcpu_stacks } => {
                    attached.push(Box::new(SchedEngineCollector::attach(
                        &mut ebpf,
                        SchedOptions {
                            offcpu_stacks: *offcpu_stacks,
                            runq_stats: true,
                            offcpu_blocks: config
                                .capabilities
                                .contains(&Capability::OffCpuBlockCounts),
                        },
                    )?))
                }
                Capability::GoroutineEvents { targets, command } => attached.push(Box::new(
                    collectors::goroutines::GoroutineCollector::attach(
                        &mut ebpf,
                        targets,
                        command.clone(),
                    )?,
                )),
                // A setting of the sched collector, read above.
                Capability::OffCpuBlockCounts => {}
            }
        }
        let explicit_alive = match &config.targets {
            TargetSpec::Pids(pids) => pids
                .iter()
                .copied()
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
                .collect(),
            _ => HashSet::new(),
        };
        Ok(Engine {
            ebpf,
            events,
            targets,
            collectors: attached,
            processes: ProcessTable::default(),
            store: Store::default(),
            explicit_alive,
            counters_at_window_start: HashMap::new(),
            tick: 0,
            exits_seen: 0,
            rereads: std::collections::VecDeque::new(),
            tick_errors: 0,
        })
    }

    fn run(mut self, control: mpsc::Receiver<Control>, wake_fd: &OwnedFd, status: &Mutex<Status>) {
        let ring_fd = self.events.as_fd().as_raw_fd();
        let mut next_tick = Instant::now() + TICK;
        self.publish(status);
        loop {
            let mut wake_at = next_tick.min(Instant::now() + DRAIN_EVERY);
            if let Some(&(at, _)) = self.rereads.front() {
                wake_at = wake_at.min(at);
            }
            poll_readable(
                &[ring_fd, wake_fd.as_raw_fd()],
                wake_at.saturating_duration_since(Instant::now()),
            );
            drain_wake(wake_fd);
            self.drain_events();
            while let Some(&(at, pid)) = self.rereads.front() {
                if at > Instant::now() {
                    break;
                }
                self.rereads.pop_front();
                self.processes.reread(pid);
            }
            loop {
                match control.try_recv() {
                    Ok(Control::TakeWindow(reply)) => {
                        self.seal();
                        let window = self.take_window();
                        let _ = reply.send(window);
                    }
                    Ok(Control::CommandSpawned(reply)) => {
                        self.targets.spawned();
                        let _ = reply.send(());
                    }
                    Ok(Control::CommandStarted(pid, reply)) => {
                        let result = self
                            .collectors
                            .iter_mut()
                            .try_for_each(|c| c.command_started(&mut self.ebpf, pid));
                        let _ = reply.send(result);
                    }
                    Ok(Control::Target(pid, observe, reply)) => {
                        let result = if observe {
                            self.targets.observe(pid)
                        } else {
                            self.targets.forget(pid)
                        };
                        let _ = reply.send(result);
                    }
                    Ok(Control::Stop(reply)) => {
                        self.finish();
                        let window = self.take_window();
                        let _ = reply.send(window);
                        return;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    // The handle is gone without a stop: nobody wants the data.
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if Instant::now() >= next_tick {
                self.on_tick();
                self.publish(status);
                next_tick = Instant::now() + TICK;
            }
        }
    }

    /// Hands every pending ring-buffer record to its owner, in order.
    fn drain_events(&mut self) {
        let mut cx = Context {
            processes: &mut self.processes,
            store: &mut self.store,
        };
        while let Some(record) = self.events.next() {
            match record_kind(&record) {
                Some(kind @ (EVENT_PROCESS_EXEC | EVENT_PROCESS_EXIT)) => {
                    let Some(pid) = parse_process_event(&record) else {
                        continue;
                    };
                    if kind == EVENT_PROCESS_EXEC {
                        cx.processes.exec(pid);
                        self.rereads
                            .push_back((Instant::now() + REREAD_AFTER_EXEC, pid));
                    } else {
                        self.exits_seen += 1;
                        cx.processes.exited(pid, self.tick);
                        cx.store.exited.insert(pid);
                        self.explicit_alive.remove(&pid);
                    }
                }
                Some(kind) => {
                    if let Some(c) = self.collectors.iter_mut().find(|c| c.handles(kind)) {
                        c.on_record(kind, &record, &mut cx);
                    }
                }
                None => {}
            }
        }
    }

    fn on_tick(&mut self) {
        self.tick += 1;
        let mut cx = Context {
            processes: &mut self.processes,
            store: &mut self.store,
        };
        for c in &mut self.collectors {
            if let Err(e) = c.tick(&mut cx) {
                self.tick_errors += 1;
                log::warn!("{} collector: {e}", c.name());
            }
        }
        self.processes
            .evict_exited(self.tick.saturating_sub(EXITED_GRACE_TICKS));
        // A --pid target that exited before the first exit event could be seen.
        self.explicit_alive
            .retain(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    /// Ends what the current window gathers now, not up to a tick later: every collector
    /// closes its in-kernel maps, the records written meanwhile are handled, and the closed
    /// maps are drained into the store.
    fn seal(&mut self) {
        self.drain_events();
        let mut cx = Context {
            processes: &mut self.processes,
            store: &mut self.store,
        };
        for c in &mut self.collectors {
            if let Err(e) = c.seal(&mut cx) {
                self.tick_errors += 1;
                log::warn!("{} collector: {e}", c.name());
            }
        }
        // Programs that read the old generation just before the switch finish within
        // microseconds; their stack copies are in the ring buffer once they return.
        thread::sleep(SEAL_GRACE);
        self.drain_events();
        let mut cx = Context {
            processes: &mut self.processes,
            store: &mut self.store,
        };
        for c in &mut self.collectors {
            if let Err(e) = c.drain_sealed(&mut cx) {
                self.tick_errors += 1;
                log::warn!("{} collector: {e}", c.name());
            }
        }
    }

    fn finish(&mut self) {
        self.drain_events();
        let mut cx = Context {
            processes: &mut self.processes,
            store: &mut self.store,
        };
        for c in &mut self.collectors {
            if let Err(e) = c.finish(&mut cx) {
                self.tick_errors += 1;
                log::warn!("{} collector: {e}", c.name());
            }
        }
    }

    /// Every collector's counters plus the engine's own, cumulative.
    fn counters(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            self.collectors.iter().flat_map(|c| c.counters()).collect();
        all.push(("process_exits".into(), self.exits_seen));
        all.push(("engine_tick_errors".into(), self.tick_errors));
        all
    }

    fn take_window(&mut self) -> Window {
        let ids = self.store.module_ids();
        let modules = ids
            .iter()
            .filter_map(|id| Some((*id, self.processes.modules.get(*id)?.clone())))
            .collect();
        let now = self.counters();
        let counters = now
            .iter()
            .map(|(name, total)| {
                let before = self
                    .counters_at_window_start
                    .get(name)
                    .copied()
                    .unwrap_or(0);
                (name.clone(), total.saturating_sub(before))
            })
            .collect();
        self.counters_at_window_start = now.into_iter().collect();
        let window = self.store.take_window(modules, counters);
        // The window holds what it needs; the cache keeps only what live processes map.
        self.processes.modules.release_unused(|_| false);
        // File pages read by unwinding and symbolization since the last window (libLLVM's
        // unwind tables, librustc_driver's symbols) would otherwise stay counted in loupe's RSS.
        self.processes.modules.release_resident_pages();
        window
    }

    fn publish(&self, status: &Mutex<Status>) {
        let snapshot = Status {
            totals: self.store.totals(),
            targets_alive: self.explicit_alive.len(),
            processes: self.processes.len(),
            modules: self.processes.modules.len(),
            stacks: self.store.stacks(),
        };
        if let Ok(mut s) = status.lock() {
            *s = snapshot;
        }
    }
}

/// Waits until one of `fds` is readable or `timeout` passes.
/// Weight for the collection thread (nice -10): on a busy host it must still run within a
/// few milliseconds of a process's exec, to read that process's mappings before a
/// short-lived one exits; at normal weight it waited 50-100 ms behind compile jobs. It uses
/// little CPU, so the weight costs the host nothing. Without CAP_SYS_NICE it stays as is.
fn raise_priority() {
    // SAFETY: plain syscalls on the calling thread's own id.
    let ret = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10)
    };
    if ret != 0 {
        log::debug!(
            "collection thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn poll_readable(fds: &[i32], timeout: Duration) {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `polls` is a live array of `polls.len()` pollfd structs.
    unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
}

/// The kind tag every ring-buffer record starts with.
pub fn record_kind(record: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(record.get(..4)?.try_into().ok()?))
}

/// A plain-old-data record of type `T` at the start of `record`, if it is long enough.
pub fn read_record<T: Copy>(record: &[u8]) -> Option<T> {
    let bytes = record.get(..size_of::<T>())?;
    // SAFETY: the length was checked, and callers only use #[repr(C)] plain-old-data types
    // shared with the kernel programs, valid for any bit pattern.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

fn parse_process_event(record: &[u8]) -> Option<u32> {
    read_record::<ProcessEvent>(record).map(|e| e.pid)
}

#[cfg(test)]
mod live_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_by_kind_and_short_ones_are_refused() {
        let event = ProcessEvent {
            kind: EVENT_PROCESS_EXIT,
            pid: 4242,
        };
        // SAFETY: viewing a live repr(C) struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&event as *const ProcessEvent).cast::<u8>(),
                size_of::<ProcessEvent>(),
            )
        };
        assert_eq!(record_kind(bytes), Some(EVENT_PROCESS_EXIT));
        assert_eq!(parse_process_event(bytes), Some(4242));
        assert_eq!(parse_process_event(&bytes[..5]), None);
        assert_eq!(record_kind(&bytes[..3]), None);
    }
}

//! The daemon's two window threads: a ticker that ends a window every `window` (the engine's
//! own thread keeps collecting), and a symbolizer that names and stores each finished one, so
//! a slow symbolization delays neither collection nor the next window.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Instant,
};

use crate::{
    engine::{Session, Window},
    histogram::LatencyHistogram,
    profile::{Profile, ProfileMerger, ProfileType},
    stat::{counter, RUNQUEUE_HISTOGRAM},
    symbolize::Symbolizer,
};

use super::{
    attribution::Attribution,
    store::{ProcessFigures, WindowData},
    Shared,
};

/// How often the daemon prints its state counts on stderr.
const STATE_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Windows waiting for the symbolizer; past this the ticker waits (collection does not).
const QUEUE: usize = 4;

pub struct WindowThreads {
    stop: mpsc::Sender<()>,
}

impl WindowThreads {
    pub fn spawn(
        shared: Arc<Shared>,
        session: Arc<Mutex<Option<Session>>>,
    ) -> std::io::Result<WindowThreads> {
        let (windows_tx, windows_rx) = mpsc::sync_channel::<Window>(QUEUE);
        let (stop, stop_rx) = mpsc::channel::<()>();
        let period = shared.config.window;
        let started = std::time::Instant::now();
        let mut last_state_line = started;
        let ticker_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("loupe-windows".into())
            .spawn(move || loop {
                match stop_rx.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let window = {
                    let guard = session.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(s) = guard.as_ref() else { return };
                    // The bounded state, now and then: flat counts on a long run.
                    if last_state_line.elapsed() >= STATE_LINE_EVERY {
                        last_state_line = std::time::Instant::now();
                        let st = s.status();
                        let (windows, (frames, stacks), bytes) = {
                            let store = ticker_shared.store.read().unwrap_or_else(|e| e.into_inner());
                            (store.len(), store.shared_counts(), store.bytes())
                        };
                        eprintln!(
                            "loupe: [{}s] state: processes={} modules={} stacks={} windows={} stored_frames={} stored_stacks={} store_bytes={}",
                            started.elapsed().as_secs(),
                            st.processes,
                            st.modules,
                            st.stacks,
                            windows,
                            frames,
                            stacks,
                            bytes
                        );
                    }
                    s.take_window()
                };
                match window {
                    Ok(w) => {
                        if windows_tx.send(w).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        log::error!("taking a window: {e}");
                        return;
                    }
                }
            })?;
        thread::Builder::new()
            .name("loupe-symbolize".into())
            .spawn(move || {
                let mut attribution = Attribution::default();
                for window in windows_rx {
                    let stored = build(window, &shared, &mut attribution);
                    shared.add_window(stored);
                }
            })?;
        Ok(WindowThreads { stop })
    }

    /// Stops taking windows (the one being symbolized is abandoned at exit).
    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}

/// Symbolizes a finished window and gathers each process's figures.
pub fn build(mut window: Window, shared: &Shared, attribution: &mut Attribution) -> WindowData {
    let started = Instant::now();
    let symbolizer = Symbolizer::default();
    let mut profiles = BTreeMap::new();
    for profile_type in shared.profile_types() {
        let profile = window.build_profile(
            profile_type,
            "all processes".into(),
            shared.config.cpu_frequency_hz,
            &symbolizer,
        );
        profiles.insert(profile_type, per_process(profile));
    }
    shared.metrics.symbolized(started.elapsed().as_secs_f64());

    struct Acc {
        comm: String,
        cpu: u64,
        offcpu: u64,
        runq: LatencyHistogram,
    }
    let mut acc: HashMap<u32, Acc> = HashMap::new();
    fn entry<'a>(acc: &'a mut HashMap<u32, Acc>, pid: u32, comm: &str) -> &'a mut Acc {
        acc.entry(pid).or_insert_with(|| Acc {
            comm: comm.to_string(),
            cpu: 0,
            offcpu: 0,
            runq: LatencyHistogram::default(),
        })
    }
    if let Some(cpu) = profiles.get(&ProfileType::Cpu) {
        for s in &cpu.samples {
            let e = entry(&mut acc, s.pid, &s.comm);
            e.cpu = e.cpu.saturating_add(s.values.first().copied().unwrap_or(0));
        }
    }
    for thread in window.threads.values() {
        let e = entry(&mut acc, thread.pid, &thread.comm);
        let off = thread.values.get(counter::OFFCPU_NS).copied().unwrap_or(0);
        e.offcpu = e.offcpu.saturating_add(off);
    }
    for (key, h) in &window.histograms {
        if key.name == RUNQUEUE_HISTOGRAM {
            entry(&mut acc, key.pid, "").runq.merge(h);
        }
    }
    acc.remove(&0); // the idle task
    let processes: HashMap<u32, ProcessFigures> = acc
        .into_iter()
        .map(|(pid, a)| {
            let figures = ProcessFigures {
                info: attribution.lookup(pid, &a.comm),
                cpu_samples: a.cpu,
                offcpu_ns: shared.sched_enabled.then_some(a.offcpu),
                runqueue: a.runq,
                exited: window.exited.contains(&pid),
            };
            (pid, figures)
        })
        .collect();
    attribution.retain(|pid| processes.contains_key(&pid));
    WindowData {
        start: window.start_time,
        duration: window.duration,
        profiles,
        processes,
        counters: std::mem::take(&mut window.counters),
    }
}

/// Merges a profile's threads into their process (the store keeps processes, not threads).
fn per_process(mut profile: Profile) -> Profile {
    for s in &mut profile.samples {
        s.tid = s.pid;
    }
    let empty = Profile {
        profile_type: profile.profile_type,
        target: profile.target.clone(),
        start_time: profile.start_time,
        duration: profile.duration,
        frequency_hz: profile.frequency_hz,
        frames: Vec::new(),
        samples: Vec::new(),
        drops: profile.drops.clone(),
    };
    let mut merger = ProfileMerger::default();
    merger.add(profile);
    merger.finish().unwrap_or(empty)
}

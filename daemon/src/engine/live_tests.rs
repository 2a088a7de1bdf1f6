//! The engine driven directly, as the node daemon drives it, against the real kernel (these
//! tests load BPF programs: run them as root, as `cargo xtask test` does).

use std::{
    collections::HashMap,
    process::{Child, Command},
    time::Duration,
};

use super::*;
use crate::symbolize::Symbolizer;

/// High enough that phase effects between sampling and time slicing average out on a busy host.
const HZ: u64 = 997;

/// A single-threaded process spinning on the CPU until killed (the shell's builtin `:`).
struct Spinner(Child);

impl Spinner {
    fn start() -> Spinner {
        Spinner(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("start a spinning shell"),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// On-CPU time so far, from the kernel's own accounting (/proc/PID/schedstat, ns).
    fn cpu_ns(&self) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/schedstat", self.pid()))
            .expect("read schedstat");
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("schedstat's first field")
    }
}

impl Spinner {
    /// Waits until the spinner used `cpu_ns` more of CPU time; fails after `limit`.
    fn run_for(&self, cpu_ns: u64, limit: Duration) {
        let (from, started) = (self.cpu_ns(), std::time::Instant::now());
        while self.cpu_ns() - from < cpu_ns {
            assert!(
                started.elapsed() < limit,
                "the spinner got less than {cpu_ns} ns of CPU in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU samples per process in a window (its losses are printed: a failure may need them).
fn samples_by_pid(mut window: Window) -> HashMap<u32, u64> {
    let losses: Vec<_> = window.drops().into_iter().filter(|(_, n)| *n > 0).collect();
    eprintln!("window losses: {losses:?}");
    let profile = window.build_profile(ProfileType::Cpu, String::new(), HZ, &Symbolizer::default());
    let mut by_pid = HashMap::new();
    for sample in &profile.samples {
        *by_pid.entry(sample.pid).or_default() += profile.value(sample);
    }
    by_pid
}

/// Samples expected for `cpu_ns` of CPU time at `HZ`.
fn expected(cpu_ns: u64) -> f64 {
    cpu_ns as f64 * HZ as f64 / 1e9
}

/// A process added while the session runs is sampled from then on, as often as its CPU time
/// says, and not at all after it is removed; the first target is sampled throughout. Both
/// sample paths: stack copies through the ring buffer, and frame-pointer stacks counted in
/// the kernel (drained at ticks and when a window is taken).
#[test]
fn targets_added_and_removed_while_collecting() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads BPF programs: run it as root"
    );
    for unwind in [UnwindMode::Auto, UnwindMode::Fp] {
        eprintln!("unwind mode {unwind:?}:");
        add_and_remove(unwind);
    }
}

fn add_and_remove(unwind: UnwindMode) {
    let first = Spinner::start();
    let added = Spinner::start();
    let session = Session::start(SessionConfig {
        targets: TargetSpec::Pids(vec![first.pid()]),
        capabilities: vec![Capability::Cpu {
            frequency_hz: HZ,
            unwind,
        }],
    })
    .expect("start a session (as root)");

    // The spinner runs, untraced, long enough that sampling it would show.
    added.run_for(500_000_000, Duration::from_secs(60));
    let before = samples_by_pid(session.take_window().expect("window before adding"));

    session.add_target(added.pid()).expect("add a target");
    let cpu_at_add = added.cpu_ns();
    // Long enough for about 2000 samples however little of a CPU a busy host leaves the spinner.
    added.run_for(2_000_000_000, Duration::from_secs(90));
    session
        .remove_target(added.pid())
        .expect("remove the target");
    let cpu_at_removal = added.cpu_ns();
    // Samples taken before the removal may still sit in the ring buffer or the in-kernel
    // counts, drained on the next ticks: let them arrive before ending the window.
    std::thread::sleep(TICK * 3);
    let while_added = samples_by_pid(session.take_window().expect("window while added"));

    // Enough CPU time after the removal that a sampled process would show (50 samples).
    added.run_for(500_000_000, Duration::from_secs(60));
    let cpu_at_end = added.cpu_ns();
    let after = samples_by_pid(session.stop().expect("stop"));

    // The spinner ran all along (`run_for` checked its CPU time), yet was sampled only
    // while added.
    assert!(cpu_at_end - cpu_at_removal >= 500_000_000);
    assert_eq!(
        before.get(&added.pid()),
        None,
        "samples of a process before it was added"
    );
    assert_eq!(
        after.get(&added.pid()),
        None,
        "samples of a process after it was removed"
    );
    let got = while_added.get(&added.pid()).copied().unwrap_or(0) as f64;
    let want = expected(cpu_at_removal - cpu_at_add);
    eprintln!(
        "added process: {got} samples while added, {want:.1} expected from {} ms of CPU",
        (cpu_at_removal - cpu_at_add) / 1_000_000
    );
    assert!(
        want > 1000.0,
        "the added process ran too little to compare ({want:.0} samples expected)"
    );
    assert!(
        (got - want).abs() <= want * 0.10,
        "the added process: {got} samples while added, {want:.0} expected from its CPU time"
    );
    // The first target is sampled throughout.
    for (name, window) in [
        ("before", &before),
        ("while", &while_added),
        ("after", &after),
    ] {
        assert!(
            window.get(&first.pid()).copied().unwrap_or(0) > 0,
            "no samples of the first target in the window {name} the other was added"
        );
    }
}

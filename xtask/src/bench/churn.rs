//! `cargo xtask bench churn [--minutes N]`: loupe's memory and state under process and binary
//! churn, the load a long `--all` profile meets on a build machine.
//!
//! `loupe profile --all -d <N>m` runs while a loop keeps writing, compiling (gcc) and running
//! small C programs, a new binary each time in a temporary directory, deleting the previous
//! ones. Reported: loupe's resident memory (/proc/PID/status) after 2 minutes and at the end,
//! its peak, and the state counts loupe prints on stderr (`loupe: state: processes=N
//! modules=M`, at the end and, if present, every minute with the elapsed time before it).
//! Bounded state shows as counts that stop growing while thousands of binaries come and go.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::target_dir;
use crate::{build, setup};

/// Where the benchmarked daemon listens.
const DAEMON_ADDR: &str = "127.0.0.1:7476";

/// When the first resident-memory figure is taken.
const EARLY_RSS_AT: Duration = Duration::from_secs(120);
/// How often loupe's memory is read (the last read before it exits is "at the end").
const RSS_POLL: Duration = Duration::from_secs(1);
/// Binaries kept on disk at once: older ones are deleted.
const KEEP_BINARIES: usize = 4;

/// One `state:` line from loupe's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StateLine {
    /// Whatever loupe printed before `state:` besides the `loupe:` tag (the elapsed time of
    /// periodic lines), empty for the final line.
    prefix: String,
    processes: Option<u64>,
    modules: Option<u64>,
}

/// Parses a state line leniently: `state:` anywhere, then `key=value` words in any order;
/// `None` when the line has no `state:`.
fn parse_state_line(line: &str) -> Option<StateLine> {
    let at = line.find("state:")?;
    let prefix = line[..at]
        .replace("loupe:", " ")
        .trim()
        .trim_end_matches(':')
        .trim()
        .to_string();
    let mut state = StateLine {
        prefix,
        processes: None,
        modules: None,
    };
    for word in line[at + "state:".len()..].split(|c: char| c.is_whitespace() || c == ',') {
        let Some((key, value)) = word.split_once('=') else {
            continue;
        };
        let value = value.trim().parse::<u64>().ok();
        match key.trim() {
            "processes" => state.processes = value,
            "modules" => state.modules = value,
            _ => {}
        }
    }
    Some(state)
}

/// `VmRSS` and `VmHWM` of a process, KiB; `None` once it is gone.
pub(crate) fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The C source of churn program `n`: its own function name and constants, so every binary
/// differs (new file, new build ID, new symbols), and ~20 ms of CPU so it gets sampled.
fn program_source(n: u64) -> String {
    format!(
        r#"#include <stdint.h>
#include <time.h>

static volatile uint64_t sink;

__attribute__((noinline)) uint64_t churn_{n}(uint64_t x) {{
    for (int i = 0; i < 4096; i++) {{
        x = x * 6364136223846793005u + {n}u;
        x ^= x >> 29;
    }}
    return x;
}}

int main(void) {{
    struct timespec ts;
    uint64_t x = {n}u, start_ns, now_ns;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    start_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    do {{
        x = churn_{n}(x);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        now_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }} while (now_ns - start_ns < 20000000u);
    sink = x;
    return 0;
}}
"#
    )
}

/// Writes, compiles and runs program `n` in `dir`; returns the binary's path.
fn build_and_run(dir: &Path, n: u64) -> Result<PathBuf> {
    let source = dir.join(format!("churn_{n}.c"));
    let binary = dir.join(format!("churn_{n}"));
    fs::write(&source, program_source(n))
        .with_context(|| format!("writing {}", source.display()))?;
    let gcc = Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .context("running gcc (package build-essential)")?;
    if !gcc.status.success() {
        bail!(
            "gcc failed on {}: {}",
            source.display(),
            String::from_utf8_lossy(&gcc.stderr)
        );
    }
    fs::remove_file(&source).with_context(|| format!("removing {}", source.display()))?;
    let status = Command::new(&binary)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    if !status.success() {
        bail!("{} failed: {status}", binary.display());
    }
    Ok(binary)
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("loupe-churn-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct Results {
    minutes: u64,
    /// What ran: the one-shot profile or the daemon.
    subject: String,
    programs: u64,
    churn_time: Duration,
    early_rss_kib: Option<u64>,
    end_rss_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    /// Every state line, with when it arrived (since loupe started sampling).
    states: Vec<(Duration, StateLine)>,
    profile_bytes: Option<u64>,
}

pub fn run(minutes: u64, daemon: bool) -> Result<()> {
    if minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    setup::run()?;
    let object = build::build_ebpf()?;
    let loupe = build::build_daemon(&object, true)?;
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let work = TempDir::new()?;
    let profile = work.0.join("churn.pb.gz");

    let mut command = Command::new(&loupe);
    if daemon {
        command.args(["daemon", "--listen", DAEMON_ADDR]);
    } else {
        command
            .args(["profile", "--all", "-d", &format!("{minutes}m"), "-o"])
            .arg(&profile);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", loupe.display()))?;
    let pid = child.id();
    let stderr = child.stderr.take().context("loupe's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next() {
            Some(Ok(line))
                if line.starts_with("loupe: profiling") || line.contains("daemon listening on") =>
            {
                break
            }
            Some(Ok(_)) => {}
            _ => bail!("loupe exited before it started profiling"),
        }
    }
    let started = Instant::now();
    println!("bench churn: loupe (pid {pid}) observing the host for {minutes} min under churn");
    // stderr is read on its own thread (so loupe never blocks on it); lines arrive stamped.
    let (tx, rx) = mpsc::channel::<(Duration, String)>();
    let reader = std::thread::spawn(move || {
        for line in lines.map_while(std::result::Result::ok) {
            if tx.send((started.elapsed(), line)).is_err() {
                return;
            }
        }
    });

    let deadline = started + Duration::from_secs(minutes * 60);
    let mut results = Results {
        minutes,
        subject: if daemon {
            "loupe daemon".to_string()
        } else {
            format!("loupe profile --all -d {minutes}m")
        },
        programs: 0,
        churn_time: Duration::ZERO,
        early_rss_kib: None,
        end_rss_kib: None,
        peak_rss_kib: None,
        states: Vec::new(),
        profile_bytes: None,
    };
    let mut kept: std::collections::VecDeque<PathBuf> = std::collections::VecDeque::new();
    let mut last_poll = Instant::now() - RSS_POLL;
    let on_line = |results: &mut Results, at: Duration, line: String| {
        if let Some(state) = parse_state_line(&line) {
            println!("bench churn: [{:>4}s] {line}", at.as_secs());
            results.states.push((at, state));
        } else if !line.trim().is_empty() {
            println!("bench churn:   {line}");
        }
    };
    let poll = |results: &mut Results| {
        if let Some((rss, hwm)) = memory_kib(pid) {
            if results.early_rss_kib.is_none() && started.elapsed() >= EARLY_RSS_AT {
                results.early_rss_kib = Some(rss);
                println!(
                    "bench churn: loupe RSS after {} s: {:.1} MiB",
                    started.elapsed().as_secs(),
                    rss as f64 / 1024.0
                );
            }
            results.end_rss_kib = Some(rss);
            results.peak_rss_kib = Some(hwm);
        }
    };

    // The churn: until the profile's end.
    while Instant::now() < deadline {
        let binary = build_and_run(&work.0, results.programs)?;
        results.programs += 1;
        kept.push_back(binary);
        while kept.len() > KEEP_BINARIES {
            if let Some(old) = kept.pop_front() {
                fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
            }
        }
        if last_poll.elapsed() >= RSS_POLL {
            poll(&mut results);
            last_poll = Instant::now();
        }
        while let Ok((at, line)) = rx.try_recv() {
            on_line(&mut results, at, line);
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("loupe exited during the churn: {status}");
        }
    }
    results.churn_time = started.elapsed();
    if daemon {
        // The daemon runs until told to stop.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    println!(
        "bench churn: {} programs built and run; waiting for loupe to write its profile",
        results.programs
    );

    // Until loupe exits: its memory while it symbolizes and writes is part of "at the end".
    let status = loop {
        poll(&mut results);
        while let Ok((at, line)) = rx.try_recv() {
            on_line(&mut results, at, line);
        }
        if let Some(status) = child.try_wait().context("waiting for loupe")? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = reader.join();
    while let Ok((at, line)) = rx.try_recv() {
        on_line(&mut results, at, line);
    }
    if !status.success() {
        bail!("loupe failed: {status}");
    }
    results.profile_bytes = fs::metadata(&profile).ok().map(|m| m.len());

    let report = report(&results);
    println!("\n{report}");
    let path = out_dir.join(if daemon {
        "churn-daemon.md"
    } else {
        "churn.md"
    });
    fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("bench churn: report written to {}", path.display());
    Ok(())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".to_string(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

fn counts(state: &StateLine) -> String {
    let n = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    format!(
        "processes={} modules={}",
        n(state.processes),
        n(state.modules)
    )
}

fn report(r: &Results) -> String {
    let mut out = format!(
        "Churn benchmark: `{}` (release) for {} min while new C programs are written, \
         compiled with gcc and run, one after another, each a new binary (older ones deleted).\n\n\
         | measure | value |\n|---|---|\n",
        r.subject, r.minutes
    );
    let secs = r.churn_time.as_secs_f64().max(1e-9);
    let _ = writeln!(
        out,
        "| programs built and run | {} ({:.1}/s) |",
        r.programs,
        r.programs as f64 / secs
    );
    let _ = writeln!(
        out,
        "| loupe RSS after {} min | {} |",
        EARLY_RSS_AT.as_secs() / 60,
        mib(r.early_rss_kib)
    );
    let _ = writeln!(out, "| loupe RSS at the end | {} |", mib(r.end_rss_kib));
    let _ = writeln!(out, "| loupe peak RSS (VmHWM) | {} |", mib(r.peak_rss_kib));
    // The final line has no elapsed prefix; periodic ones do. Failing that, the last one.
    let last = r
        .states
        .iter()
        .rev()
        .find(|(_, s)| s.prefix.is_empty())
        .or(r.states.last());
    let _ = writeln!(
        out,
        "| state at the end | {} |",
        last.map_or_else(|| "not reported".to_string(), |(_, s)| counts(s))
    );
    let _ = writeln!(
        out,
        "| profile written | {} |",
        r.profile_bytes.map_or_else(
            || "-".to_string(),
            |b| format!("{:.1} KiB", b as f64 / 1024.0)
        )
    );
    let periodic: Vec<_> = r
        .states
        .iter()
        .filter(|(_, s)| !s.prefix.is_empty())
        .collect();
    out += "\nState during the profile (loupe's periodic line):\n\n";
    if periodic.is_empty() {
        out += "not reported\n";
    } else {
        out += "| received at | loupe's prefix | counts |\n|---|---|---|\n";
        for (at, s) in periodic {
            let _ = writeln!(out, "| {} s | {} | {} |", at.as_secs(), s.prefix, counts(s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_and_periodic_state_lines_parse() {
        assert_eq!(
            parse_state_line("loupe: state: processes=12 modules=345"),
            Some(StateLine {
                prefix: String::new(),
                processes: Some(12),
                modules: Some(345)
            })
        );
        let periodic = parse_state_line("loupe: 60s: state: processes=3 modules=40").unwrap();
        assert_eq!(periodic.prefix, "60s");
        assert_eq!((periodic.processes, periodic.modules), (Some(3), Some(40)));
        let periodic = parse_state_line("[1m 0s] loupe: state: modules=7, processes=2").unwrap();
        assert_eq!(periodic.prefix, "[1m 0s]");
        assert_eq!((periodic.processes, periodic.modules), (Some(2), Some(7)));
    }

    #[test]
    fn lines_without_state_or_counts_are_told_apart() {
        assert_eq!(parse_state_line("loupe: wrote /tmp/x.pb.gz"), None);
        let partial = parse_state_line("loupe: state: processes=many").unwrap();
        assert_eq!((partial.processes, partial.modules), (None, None));
    }

    #[test]
    fn churn_programs_differ_and_compile() {
        assert_ne!(program_source(1), program_source(2));
        let dir = TempDir::new().unwrap();
        let binary = build_and_run(&dir.0, 7).unwrap();
        assert!(binary.is_file());
        assert!(!dir.0.join("churn_7.c").exists(), "the source is deleted");
    }

    #[test]
    fn report_says_not_reported_without_state_lines() {
        let r = Results {
            minutes: 3,
            subject: "loupe profile --all -d 3m".to_string(),
            programs: 10,
            churn_time: Duration::from_secs(180),
            early_rss_kib: Some(2048),
            end_rss_kib: None,
            peak_rss_kib: Some(4096),
            states: Vec::new(),
            profile_bytes: None,
        };
        let text = report(&r);
        assert!(
            text.contains("| state at the end | not reported |"),
            "{text}"
        );
        assert!(
            text.contains("| loupe RSS after 2 min | 2.0 MiB |"),
            "{text}"
        );
    }
}

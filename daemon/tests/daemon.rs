//! `loupe daemon`: the real binary, as root, host-wide, against fixtures whose CPU time the
//! kernel reports (`wait4` rusage), read through its HTTP API, `go tool pprof`, `promtool`
//! and headless Chromium (web/test/ui_test.mjs).

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

#[path = "../src/goroutines/tests/running.rs"]
#[allow(dead_code)] // Its clock stamps serve the census tests.
mod running;

/// A running `loupe daemon` on a free loopback port; killed if the test fails.
struct Daemon {
    child: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts the daemon with `config` (TOML) and waits until it serves.
    fn start(config: &str) -> Daemon {
        let addr = free_loopback_addr();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("loupe.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(loupe_bin())
            .args(["daemon", "--listen", &addr, "--config"])
            .arg(&path)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start loupe daemon");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("daemon listening on") => break,
                Some(Ok(line)) => eprintln!("daemon: {line}"),
                other => panic!("loupe daemon exited before it listened: {other:?}"),
            }
        }
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("daemon: {line}");
            }
        });
        Daemon {
            child: Some(child),
            addr,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http_get(&self.addr, path)
    }

    /// GET, expecting 200 and JSON.
    fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(
            status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&body)
        );
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// Waits until a window that started after `after` is stored.
    fn wait_for_window_after(&self, after: std::time::SystemTime) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.json("/api/v1/status");
            let newest = status["windows"]["newest"].as_str().map(rfc3339_secs);
            let after = after
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after epoch")
                .as_secs_f64();
            if newest.is_some_and(|n| n > after) {
                return;
            }
            assert!(Instant::now() < deadline, "no new window in 30 s: {status}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback address with a port nobody listens on.
fn free_loopback_addr() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// A minimal HTTP/1.1 GET (no client library in the dev-dependencies).
fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to the daemon");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[end + 4 + size..];
    }
}

/// Seconds since the epoch of `2026-11-21T17:39:00.000Z` (the daemon's own format).
fn rfc3339_secs(text: &str) -> f64 {
    let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    t.duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs_f64()
}

/// Starts `hogs THREADS SECONDS`; returns it with its pid once its threads run.
fn start_hogs(threads: u32, seconds: u32) -> (Child, u32) {
    let mut child = Command::new(fixture("c/hogs"))
        .args([threads.to_string(), seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start hogs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("hogs prints its pid");
    let v: Value = serde_json::from_str(&line).expect("hogs JSON");
    let pid = v["pid"].as_u64().expect("pid") as u32;
    (child, pid)
}

/// Waits for `child` and returns the CPU time the kernel accounted to it (all threads).
fn wait_cpu_seconds(child: Child) -> f64 {
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with live out-pointers.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, child.id() as i32, "wait4");
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Every name in a flame-graph node tree.
fn names(node: &Value, into: &mut Vec<String>) {
    if let Some(n) = node["name"].as_str() {
        into.push(n.to_string());
    }
    for c in node["children"].as_array().into_iter().flatten() {
        names(c, into);
    }
}

fn go() -> PathBuf {
    go_toolchains()
        .into_iter()
        .last()
        .map(|(_, path)| path)
        .expect("a Go toolchain (LOUPE_GO_BINARIES)")
}

/// BPF program ids the process holds descriptors of (from /proc/PID/fdinfo).
fn bpf_program_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        ids.extend(
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|v| v.trim().parse::<u32>().ok()),
        );
    }
    ids
}

fn loaded_program_ids() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("run bpftool (apt-get install bpftool)");
    assert!(out.status.success(), "bpftool prog show failed");
    let v: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_u64().map(|id| id as u32))
        .collect()
}

const CONFIG: &str =
    "window = \"2s\"\ncpu_frequency_hz = 99\nmetrics_top_processes = 50\nlive_profiles = 1\n";

#[test]
fn daemon_serves_processes_profiles_metrics_and_exits_clean_on_sigterm() {
    assert_root();
    let _serial = serial();
    let daemon = Daemon::start(CONFIG);
    let started = std::time::SystemTime::now();

    // 1. A workload whose whole life is inside stored windows: its CPU time from the API
    // against the kernel's accounting of it (wait4 rusage).
    let (hogs, pid) = start_hogs(1, 6);
    let truth = wait_cpu_seconds(hogs);
    daemon.wait_for_window_after(std::time::SystemTime::now());
    let processes = daemon.json("/api/v1/processes?window=10m");
    let entry = processes["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("hogs (pid {pid}) not listed: {processes}"))
        .clone();
    assert_eq!(entry["comm"], "hogs", "{entry}");
    assert_eq!(entry["alive"], false, "it exited: {entry}");
    let cpu = entry["cpu_seconds"].as_f64().expect("cpu_seconds");
    assert!(truth > 0.5, "hogs got too little CPU to compare: {truth} s");
    // Sampling at 99 Hz on a busy 2-CPU host shared with other workloads: a few hundred
    // samples, whose losses (counted, not attributable to a pid) come on top.
    assert!(
        (cpu - truth).abs() <= truth * 0.25 + 0.05,
        "cpu_seconds {cpu} vs the kernel's {truth} s for hogs; losses: {}",
        daemon.json("/api/v1/status")["drops"]
    );
    assert!(entry["offcpu_seconds"].is_number(), "{entry}");
    assert!(
        entry["runq_p99_ns"].is_number(),
        "a busy spinner waits to run: {entry}"
    );

    // 2. Its flame graph names the program's own functions, under its process node.
    let flame = daemon.json(&format!(
        "/api/v1/flamegraph?type=cpu&pid={pid}&from=now-10m"
    ));
    let mut seen = Vec::new();
    names(&flame["root"], &mut seen);
    for want in ["hogs", "hog", "start_thread"] {
        assert!(seen.iter().any(|n| n == want), "{want} not in {seen:?}");
    }
    assert_eq!(flame["root"]["children"][0]["kind"], "process");
    assert_eq!(flame["total"], flame["root"]["value"]);
    let histogram = daemon.json(&format!(
        "/api/v1/histograms?name=runqueue&pid={pid}&from=now-10m"
    ));
    assert!(histogram["count"].as_u64() > Some(0), "{histogram}");

    // 3. go tool pprof reads a live profile of a running workload, and one from the store.
    let (mut hogs, pid) = start_hogs(1, 20);
    let tmp = tempfile::tempdir().expect("tempdir");
    let pprof = |url: String| {
        let out = go_command(&go())
            .args(["tool", "pprof", "-top", "-nodecount=100", &url])
            .env("PPROF_TMPDIR", tmp.path())
            .env("HOME", tmp.path())
            .output()
            .expect("run go tool pprof");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "go tool pprof {url}: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let live = pprof(daemon.url(&format!("/debug/pprof/profile?pid={pid}&seconds=2")));
    assert!(
        live.contains(" hog\n") || live.contains(" hog "),
        "live: {live}"
    );
    assert!(!live.contains("loupe-windows"), "{live}");
    daemon.wait_for_window_after(std::time::SystemTime::now());
    let stored = pprof(daemon.url(&format!(
        "/debug/pprof/profile?pid={pid}&from=now-1m&to=now"
    )));
    assert!(
        stored.contains(" hog\n") || stored.contains(" hog "),
        "stored: {stored}"
    );

    // 4. Live profiles are bounded (live_profiles = 1): a second one at once gets 429,
    // and a client that goes away mid-profile frees its slot.
    let addr = daemon.addr.clone();
    let first = std::thread::spawn(move || {
        http_get(&addr, &format!("/debug/pprof/profile?pid={pid}&seconds=3")).0
    });
    std::thread::sleep(Duration::from_millis(700));
    let (status, body) = daemon.get(&format!("/debug/pprof/profile?pid={pid}&seconds=1"));
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    assert_eq!(first.join().expect("first profile"), 200);
    {
        let mut gone = TcpStream::connect(&daemon.addr).expect("connect");
        write!(
            gone,
            "GET /debug/pprof/profile?pid={pid}&seconds=60 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        .expect("send");
        std::thread::sleep(Duration::from_millis(700));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = daemon.get(&format!("/debug/pprof/profile?pid={pid}&seconds=1"));
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slot of a client that went away was not freed ({status})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = hogs.kill();
    let _ = hogs.wait();
    // The daemon's own profile (pprof crate), read by go tool pprof: its engine thread.
    let own = pprof(daemon.url("/debug/pprof/self?seconds=2"));
    assert!(own.contains("loupe::"), "self: {own}");

    // 5. /metrics passes promtool, with the workload's own series.
    let (status, metrics) = daemon.get("/metrics");
    assert_eq!(status, 200);
    promtool_check_metrics(&metrics);
    let metrics = String::from_utf8_lossy(&metrics);
    for family in [
        "loupe_cpu_samples_total{",
        "loupe_offcpu_seconds_total{",
        "loupe_runqueue_latency_seconds_bucket{",
        "loupe_drops_total{",
        "loupe_store_windows ",
        "loupe_resident_memory_bytes ",
        "loupe_symbolization_seconds_count ",
    ] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }

    // 6. Bad requests get 400 with a one-line reason naming the parameter; the daemon
    // keeps serving.
    for (path, names) in [
        ("/api/v1/flamegraph?type=cpux", "cpux"),
        ("/api/v1/flamegraph", "type"),
        ("/api/v1/flamegraph?type=cpu&from=yesterday", "from"),
        (
            "/api/v1/flamegraph?type=cpu&pid=1&container=abcdefabcdef",
            "pid",
        ),
        ("/api/v1/flamegraph?type=cpu&max_nodes=0", "max_nodes"),
        ("/api/v1/flamegraph/diff?type=cpu&a_from=now-1m", "a_to"),
        ("/api/v1/histograms?name=nope", "nope"),
        ("/api/v1/processes?window=soon", "window"),
        ("/api/v1/flamegraph?type=cpu&from=now&to=now-1h", "to"),
        ("/debug/pprof/profile?seconds=100000", "seconds"),
        ("/debug/pprof/profile?seconds=x", "seconds"),
        ("/debug/pprof/profile?pid=abc", "pid"),
    ] {
        let (status, body) = daemon.get(path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            text.contains(names) && text.trim().lines().count() == 1,
            "{path}: {text}"
        );
    }
    assert_eq!(
        daemon.get("/debug/pprof/profile?pid=4194304&seconds=1").0,
        404
    );
    assert_eq!(daemon.get("/api/v1/nothing").0, 404);
    let status = daemon.json("/api/v1/status");
    assert!(
        status["collectors"]
            .as_array()
            .expect("collectors")
            .iter()
            .any(|c| c["name"] == "cpu" && c["enabled"] == true),
        "{status}"
    );
    assert!(status["windows"]["count"].as_u64() > Some(0), "{status}");
    let _ = started;

    // 7. SIGTERM: exit 0 within 2 s, and none of the daemon's BPF programs remain.
    let mut daemon = daemon;
    let pid = daemon.pid();
    let programs = bpf_program_ids(pid);
    assert!(!programs.is_empty(), "the daemon holds no BPF program");
    let mut child = daemon.child.take().expect("running");
    let stop = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(2),
            "still running 2 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<u32> = loaded_program_ids()
            .into_iter()
            .filter(|id| programs.contains(id))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BPF programs {left:?} of the daemon are still loaded after it exited"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` accepts the exposition.
fn promtool_check_metrics(metrics: &[u8]) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics)
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn a_non_loopback_address_without_a_token_is_refused_with_the_reason() {
    let out = Command::new(loupe_bin())
        .args(["daemon", "--listen", "0.0.0.0:7470"])
        .output()
        .expect("run loupe daemon");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("token"),
        "{stderr}"
    );
}

/// web/test/ui_test.mjs drives headless Chromium through the UI the daemon serves, while a
/// workload and a Go program run (the goroutines view of the Go program must show its own
/// wait reason counts and creation sites); screenshots go to target/web-ui-test/. A second Go
/// program (gevents steady) keeps its runtime scheduling goroutines and reads its own
/// `/sched/latencies:seconds` every 50 ms: the latency its goroutines view draws must be the
/// API's figures (checked in the page), and those the runtime's over the span they cover.
#[test]
fn web_ui_shows_the_workload_in_headless_chromium() {
    assert_root();
    let _serial = serial();
    let web_test = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web/test");
    let node = which("node").expect("node is missing: apt-get install nodejs npm chromium");
    if !web_test.join("node_modules/playwright-core").is_dir() {
        let npm = which("npm").expect("npm is missing: apt-get install npm");
        let status = Command::new(npm)
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(&web_test)
            .status()
            .expect("npm install");
        assert!(status.success(), "npm install in web/test failed");
    }
    let daemon = Daemon::start(
        "window = \"2s\"\ncpu_frequency_hz = 49\ngoroutine_census_interval = \"2s\"\n\
         goroutine_census_processes = 1000\n",
    );
    let (mut hogs, pid) = start_hogs(1, 60);
    let go_program = start_go_fixture("");
    let go_reported = Instant::now();
    let go_pid = go_program.child.id();
    let (version, _) = go_toolchains().pop().expect("a Go toolchain");
    let mut steady =
        common::gevents::Gevents::start(&fixture(&format!("go{version}/gevents")), "steady");
    steady.ask("start", "its steady line");
    // The list and the flame graph need a stored window with the workload in it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let p = daemon.json("/api/v1/processes?window=1m");
        let busy = p["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["pid"] == pid && e["cpu_seconds"].as_f64() > Some(0.0));
        if busy {
            break;
        }
        assert!(Instant::now() < deadline, "hogs not listed with CPU: {p}");
        std::thread::sleep(Duration::from_millis(300));
    }
    // The goroutines link needs the census to have found the Go programs, and the latency
    // two census reads of the steady one.
    loop {
        let p = daemon.json("/api/v1/processes?window=5m");
        let go = |pid: u32| {
            p["processes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["pid"] == pid && e["go"] == true)
        };
        if go(go_pid)
            && go(steady.pid)
            && daemon.json(&format!("/api/v1/goroutines?pid={}", steady.pid))["sched_latency"]
                ["count"]
                .as_u64()
                > Some(0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Go programs are not listed as Go (or no latency of gevents): {p}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The UI checks the leak view at its smallest threshold (10 s): the parked goroutines
    // (their wait stamped by the GCs before the report) must be blocked longer than that.
    let leak_age = Duration::from_secs(11);
    if let Some(left) = leak_age.checked_sub(go_reported.elapsed()) {
        std::thread::sleep(left);
    }
    // What the view must show, from the program itself: each wait reason's count (states
    // without a reason, like syscall, are in the state table instead) and every creator.
    let wait_reasons: Vec<String> = fixture_shown_states(&go_program)
        .into_iter()
        .filter(|(shown, _)| !["syscall", "running", "runnable"].contains(&shown.as_str()))
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect();
    let creators: Vec<String> = fixture_creators(&go_program)
        .into_iter()
        .map(|(creator, _)| creator)
        .collect();
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-ui-test");
    let result = Command::new(node)
        .arg(web_test.join("ui_test.mjs"))
        .args([
            "--base-url",
            &daemon.url("/"),
            "--process",
            "hogs",
            "--function",
            "hog",
            "--go-pid",
            &go_pid.to_string(),
            "--go-wait-reasons",
            &wait_reasons.join(";"),
            "--go-functions",
            &creators.join(","),
            "--go-latency-pid",
            &steady.pid.to_string(),
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run node ui_test.mjs");
    let readings = steady.ask("samples", "its latency readings");
    steady.finish();
    let _ = hogs.kill();
    let _ = hogs.wait();
    drop(go_program);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "ui_test.mjs failed:\n{stdout}{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let drawn = std::fs::read_to_string(out.join("go-sched-latency.json"))
        .expect("ui_test.mjs wrote the latency it drew");
    let drawn: Value = serde_json::from_str(&drawn).expect("JSON");
    sched_latency_is_the_runtimes(&drawn, &readings);
    for shot in [
        "flame-search.png",
        "goroutines.png",
        "goroutines-latency.png",
    ] {
        assert!(
            out.join(shot).is_file(),
            "no screenshot {shot} in {}",
            out.display()
        );
    }
}

/// How long the daemon's clock reading may trail its read of the histogram (two consecutive
/// statements; only preemption on a busy host separates them).
const READ_TO_STAMP: u64 = 50_000_000;

/// The scheduling latency the UI drew (`h`, the `/api/v1/goroutines` answer's) against the
/// program's own readings of its cumulative histogram (`{"samples": [[before_ns, after_ns,
/// count, midpoint_sum_ns], ...]}`, every 50 ms): the runtime's count and sum only grow, so
/// at each of the daemon's two reads they lie between the readings taken surely before and
/// surely after it, and the interval's between the differences of those.
fn sched_latency_is_the_runtimes(h: &Value, readings: &Value) {
    let samples: Vec<[u64; 4]> = serde_json::from_value(readings["samples"].clone())
        .unwrap_or_else(|e| panic!("the fixture's readings ({e}): {readings}"));
    let stamp = |field: &str| -> u64 {
        let text = h[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field}: {h}"));
        let t = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as u64
    };
    // (reading surely before, surely after) the daemon's read stamped `t` (ms precision).
    let bracket = |t: u64| {
        let before = samples
            .iter()
            .rev()
            .find(|s| s[1] + READ_TO_STAMP <= t)
            .unwrap_or_else(|| panic!("no reading of the program before {t} ns: {h}"));
        let after = samples
            .iter()
            .find(|s| s[0] >= t + 1_000_000)
            .unwrap_or_else(|| panic!("no reading of the program after {t} ns: {h}"));
        (before, after)
    };
    let (from_lo, from_hi) = bracket(stamp("from"));
    let (to_lo, to_hi) = bracket(stamp("to"));
    let count = h["count"].as_u64().expect("count");
    let sum = h["sum_ns"].as_u64().expect("sum_ns");
    let (count_lo, count_hi) = (to_lo[2] - from_hi[2], to_hi[2] - from_lo[2]);
    // The program sums float bucket middles; the daemon integer ones of the same buckets.
    let (sum_lo, sum_hi) = (
        (to_lo[3] - from_hi[3]) as f64 * 0.999,
        (to_hi[3] - from_lo[3]) as f64 * 1.001,
    );
    eprintln!(
        "goroutine scheduling latency drawn: {count} waits, sum {sum} ns; the runtime's: \
         {count_lo}..={count_hi} waits, sum {sum_lo:.0}..={sum_hi:.0} ns"
    );
    assert!(
        count >= 100,
        "only {count} waits sampled between two census reads"
    );
    assert!(
        (count_lo..=count_hi).contains(&count),
        "the UI drew {count} waits; the runtime recorded {count_lo} to {count_hi} then"
    );
    assert!(
        (sum_lo..=sum_hi).contains(&(sum as f64)),
        "the UI drew a sum of {sum} ns; the runtime's was {sum_lo:.0} to {sum_hi:.0} ns"
    );
    assert_eq!(
        h["mean_ns"].as_u64(),
        Some(sum / count),
        "mean = sum / count"
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Percent-encodes a query-string value.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every query of every panel of the shipped Grafana dashboards, with Grafana's variables
/// filled in as a dashboard would for `comm`.
fn dashboard_queries(comm: &str) -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut queries = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/grafana")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "dashboards missing in {}", dir.display());
    for file in files {
        let dashboard: Value = serde_json::from_slice(&std::fs::read(&file).expect("read"))
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", file.display()));
        let variables = dashboard["templating"]["list"]
            .as_array()
            .expect("variables");
        assert!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{}: no Prometheus datasource variable",
            file.display()
        );
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let expr = expr
                    .replace("$__rate_interval", "10s")
                    .replace("$instance", ".*")
                    .replace("$comm", comm);
                let what = format!(
                    "{}: {}",
                    dashboard["title"].as_str().unwrap_or("?"),
                    panel["title"].as_str().unwrap_or("?")
                );
                queries.push((what, expr));
            }
        }
    }
    queries
}

/// A real Prometheus scrapes the daemon while a workload runs; every panel of the shipped
/// dashboards returns data through Prometheus's HTTP API. The shipped scrape configuration
/// and systemd unit pass the checks their tools offer here.
#[test]
fn grafana_dashboards_get_data_from_a_prometheus_scraping_the_daemon() {
    assert_root();
    let _serial = serial();
    let prometheus =
        which("prometheus").expect("prometheus is missing: apt-get install prometheus");
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let check = Command::new(which("promtool").expect("promtool is missing"))
        .args(["check", "config"])
        .arg(deploy.join("prometheus/scrape.yml"))
        .output()
        .expect("promtool check config");
    assert!(
        check.status.success(),
        "deploy/prometheus/scrape.yml: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let systemd_analyze = which("systemd-analyze").expect("systemd-analyze is missing");
    let unit_dir = tempfile::tempdir().expect("tempdir");
    let unit = std::fs::read_to_string(deploy.join("systemd/loupe.service")).expect("unit");
    let unit_path = unit_dir.path().join("loupe.service");
    let loupe = loupe_bin();
    std::fs::write(
        &unit_path,
        unit.replace("/usr/local/bin/loupe", loupe.to_str().expect("utf-8")),
    )
    .expect("write unit");
    let verify = Command::new(systemd_analyze)
        .arg("verify")
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze verify");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify loupe.service: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // The DaemonSet against the Kubernetes API's own schemas (no API server here).
    let validator = std::env::var_os("LOUPE_KUBERNETES_VALIDATE")
        .expect("LOUPE_KUBERNETES_VALIDATE is not set: run through `cargo xtask test`");
    let manifest = deploy.join("kubernetes/daemonset.yaml");
    let validate = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&manifest)
        .env("PYTHONPATH", &validator)
        .output()
        .expect("python3 -m kubernetes_validate");
    let report = String::from_utf8_lossy(&validate.stdout).to_string()
        + &String::from_utf8_lossy(&validate.stderr);
    assert!(
        validate.status.success() && report.contains("passed for resource daemonset/loupe"),
        "kubernetes-validate --strict {}: {report}",
        manifest.display()
    );

    let daemon = Daemon::start(
        "window = \"2s\"\ncpu_frequency_hz = 49\ngoroutine_census_interval = \"2s\"\n\
         goroutine_census_processes = 1000\n",
    );
    let (mut hogs, _) = start_hogs(3, 90);
    // The Go panels need a Go program for the census to count.
    let go_program = start_go_fixture("");
    let prom_addr = free_loopback_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: loupe\n    static_configs:\n      - targets: [\"{}\"]\n",
            daemon.addr
        ),
    )
    .expect("write prometheus.yml");
    let mut prom = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let queries = dashboard_queries("hogs|goroutines");
    // Every panel has data once a few windows were scraped; allow a loaded host a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut empty: Vec<String>;
    loop {
        std::thread::sleep(Duration::from_secs(3));
        empty = Vec::new();
        for (what, expr) in &queries {
            let answer = TcpStream::connect(&prom_addr).ok().map(|_| {
                http_get(
                    &prom_addr,
                    &format!("/api/v1/query?query={}", url_encode(expr)),
                )
            });
            let has_data = answer.is_some_and(|(status, body)| {
                status == 200
                    && serde_json::from_slice::<Value>(&body).is_ok_and(|v| {
                        v["data"]["result"]
                            .as_array()
                            .is_some_and(|r| !r.is_empty())
                    })
            });
            if !has_data {
                empty.push(format!("{what}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
    }
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = hogs.kill();
    let _ = hogs.wait();
    drop(go_program);
    assert!(
        empty.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
}

/// `go tool pprof` reads a Go process's goroutines from the daemon's `/debug/pprof/goroutine`,
/// as from Go's own endpoint: the total is the program's runtime.NumGoroutine(); the text dump
/// says so too; a process that is not Go gets a 422 naming it, an unknown PID a 404.
#[test]
fn debug_pprof_goroutine_matches_the_programs_own_count() {
    assert_root();
    let _serial = serial();
    let (version, go) = go_toolchains().pop().expect("a Go toolchain");
    let run = running::start(&fixture(&format!("go{version}/goroutines")), &[], || 0);
    let pid = run.child.id();
    let live = run.report["num_goroutine"].as_u64().expect("num_goroutine");
    let daemon = Daemon::start("window = \"2s\"\n");
    let raw = go_command(&go)
        .args(["tool", "pprof", "-raw"])
        .arg(daemon.url(&format!("/debug/pprof/goroutine?pid={pid}")))
        .output()
        .expect("go tool pprof");
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(
        raw.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let samples = text
        .split("Samples:")
        .nth(1)
        .and_then(|s| s.split("Locations").next())
        .unwrap_or_else(|| panic!("no samples in pprof -raw:\n{text}"));
    let total: u64 = samples
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(n, _)| n.parse::<u64>().ok())
        .sum();
    assert_eq!(
        total, live,
        "goroutines in the profile vs runtime.NumGoroutine()"
    );
    let (status, body) = daemon.get(&format!("/debug/pprof/goroutine?pid={pid}&debug=1"));
    let dump = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{dump}");
    assert!(dump.contains(&format!("{live} live")), "{dump}");
    let (status, body) = daemon.get(&format!("/debug/pprof/goroutine?pid={}", daemon.pid()));
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("not a Go program"));
    let (status, _) = daemon.get("/debug/pprof/goroutine?pid=4194304");
    assert_eq!(status, 404);
    let (status, _) = daemon.get("/debug/pprof/goroutine");
    assert_eq!(status, 400);
}

/// The goroutines fixture (newest Go), started after the daemon so that its start lands in a
/// stored window (an idle program may appear in none later). The tests' daemons count up to
/// 1000 Go processes per round, so that Go programs other tests run on this host with more CPU
/// cannot push it out.
fn start_go_fixture(mode: &str) -> running::Running {
    let (version, _) = go_toolchains().pop().expect("a Go toolchain");
    running::start(&fixture(&format!("go{version}/goroutines")), &[mode], || 0)
}

/// What the fixture's runtime traceback printed in brackets -> count, for every goroutine:
/// the wait reason of a waiting goroutine, the state of the others (main's is `select (no
/// cases)`, where it parks after its report).
fn fixture_shown_states(run: &running::Running) -> std::collections::BTreeMap<String, u64> {
    let mut shown: std::collections::BTreeMap<String, u64> = run.report["others"]
        .as_object()
        .expect("others")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .collect();
    *shown.entry("select (no cases)".into()).or_default() += 1;
    shown
}

/// (creator function, count) of each group the fixture parked.
fn fixture_creators(run: &running::Running) -> Vec<(String, u64)> {
    run.report["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["creator"].as_str().expect("creator").to_string(),
                g["count"].as_u64().expect("count"),
            )
        })
        .collect()
}

/// The bracketed states, made from counts by state and by wait reason (a waiting goroutine
/// shows its reason; one without a reason, its state).
fn shown_from(
    by_state: &std::collections::BTreeMap<String, u64>,
    by_reason: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    let mut shown = by_reason.clone();
    let with_reason: u64 = by_reason.values().sum();
    for (state, n) in by_state {
        let n = if state == "waiting" {
            n - with_reason
        } else {
            *n
        };
        if n > 0 {
            *shown.entry(state.clone()).or_default() += n;
        }
    }
    shown
}

fn json_counts(v: &Value) -> std::collections::BTreeMap<String, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().expect("count")))
        .collect()
}

/// The value of every series of `family` whose labels include `pid="PID"`, keyed by the
/// value of `label` (exposition lines like `name{comm="x",pid="1",state="waiting"} 956`).
fn series_of(
    metrics: &str,
    family: &str,
    pid: u32,
    label: &str,
) -> std::collections::BTreeMap<String, u64> {
    let pid_label = format!("pid=\"{pid}\"");
    let mut out = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(family).and_then(|r| r.strip_prefix('{')) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if !labels.split(',').any(|l| l == pid_label) {
            continue;
        }
        let key = labels
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|v| v.split('"').next())
            .unwrap_or("")
            .to_string();
        out.insert(key, value.trim().parse::<f64>().expect("value") as u64);
    }
    out
}

/// A scalar series value (`name{labels} v` or `name v`) of the first line starting with
/// `prefix`.
fn metric_value(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// The daemon's periodic census and `/api/v1/goroutines` against the Go program's own
/// numbers: runtime.NumGoroutine(), the states its runtime's traceback printed, the creator
/// of each group it parked; the leak suspects once every parked goroutine has been blocked
/// past the threshold; a non-Go, unknown or malformed pid gets a 4xx with the reason; the
/// series of a program that exits go away. Prints the measured census cost.
#[test]
fn daemon_counts_goroutines_as_the_go_program_does() {
    assert_root();
    let _serial = serial();
    let threshold = Duration::from_secs(2);
    let daemon = Daemon::start(
        "window = \"2s\"\ngoroutine_census_interval = \"2s\"\n\
         goroutine_leak_threshold = \"2s\"\ngoroutine_census_processes = 1000\n",
    );
    let run = start_go_fixture("");
    let reported = Instant::now();
    let pid = run.child.id();
    let live = run.report["num_goroutine"].as_u64().expect("num_goroutine");
    let shown = fixture_shown_states(&run);
    let creators = fixture_creators(&run);
    let parked: u64 = creators.iter().map(|(_, n)| n).sum();

    // 1. /metrics: the periodic census counts what the runtime counts, once every parked
    // goroutine waited past the threshold (the GCs stamped them before the report).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen;
    loop {
        let (status, body) = daemon.get("/metrics");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        let by_state = series_of(&text, "loupe_go_goroutines", pid, "state");
        let by_reason = series_of(&text, "loupe_go_goroutines_waiting", pid, "wait_reason");
        let suspects = series_of(&text, "loupe_go_goroutines_leak_suspects", pid, "pid");
        let ok = by_state.values().sum::<u64>() == live
            && shown_from(&by_state, &by_reason) == shown
            && reported.elapsed() > threshold + Duration::from_secs(3)
            && suspects.values().next() == Some(&parked);
        seen = format!(
            "by state {by_state:?}, by reason {by_reason:?}, suspects {suspects:?}; \
             the program: {live} goroutines, shown {shown:?}, {parked} parked"
        );
        if ok {
            let count = metric_value(&text, "loupe_go_census_seconds_count").unwrap_or(0.0);
            let sum = metric_value(&text, "loupe_go_census_seconds_sum").unwrap_or(0.0);
            let round = metric_value(&text, "loupe_go_census_round_seconds").unwrap_or(0.0);
            assert!(count >= 1.0, "no census counted: {text}");
            // With the Go families filled in, the exposition still passes promtool.
            promtool_check_metrics(text.as_bytes());
            eprintln!(
                "census cost: {:.1} ms per process ({count} censuses of {live} goroutines), \
                 latest round {:.1} ms",
                sum / count * 1e3,
                round * 1e3
            );
            assert!(
                metric_value(&text, "loupe_go_processes{kind=\"go\"}") >= Some(1.0),
                "{text}"
            );
            assert!(
                metric_value(&text, "loupe_go_processes{kind=\"not_go\"}") >= Some(1.0),
                "non-Go processes are remembered as such: {text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics never matched the program: {seen}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // 2. The API: the same counts, every group's creator, and the leak view.
    let doc = daemon.json(&format!("/api/v1/goroutines?pid={pid}"));
    assert_eq!(doc["pid"], pid, "{doc}");
    assert_eq!(doc["go_version"], run.report["go_version"]);
    assert_eq!(
        doc["live"].as_u64(),
        Some(live),
        "live vs runtime.NumGoroutine()"
    );
    assert_eq!(
        shown_from(
            &json_counts(&doc["by_state"]),
            &json_counts(&doc["by_wait_reason"])
        ),
        shown
    );
    let groups = doc["groups"].as_array().expect("groups");
    assert_eq!(
        groups
            .iter()
            .map(|g| g["count"].as_u64().expect("n"))
            .sum::<u64>(),
        live
    );
    let leaks = &doc["leaks"];
    assert_eq!(
        leaks["older_than_ns"].as_u64(),
        Some(2_000_000_000),
        "{leaks}"
    );
    assert_eq!(leaks["count"].as_u64(), Some(parked), "{leaks}");
    let leak_groups = leaks["groups"].as_array().expect("leak groups");
    let sizes: Vec<u64> = leak_groups
        .iter()
        .map(|g| g["count"].as_u64().expect("n"))
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    for (creator, count) in &creators {
        for (what, list) in [("groups", groups), ("leak groups", leak_groups)] {
            let created: u64 = list
                .iter()
                .filter(|g| g["created_by"]["function"] == creator.as_str())
                .map(|g| g["count"].as_u64().expect("n"))
                .sum();
            assert_eq!(created, *count, "{what}: goroutines created by {creator}");
        }
    }
    for g in groups {
        let frames = g["stack"].as_array().expect("stack");
        assert_eq!(
            frames.last().map(|f| &f["function"]),
            Some(&Value::from("runtime.goexit")),
            "{g}"
        );
    }
    // A threshold longer than the program has lived: no suspect.
    let none = daemon.json(&format!("/api/v1/goroutines?pid={pid}&older_than=1h"));
    assert_eq!(none["leaks"]["count"], 0, "{}", none["leaks"]);

    // 3. Refusals: one line naming the problem.
    for (path, status, names) in [
        (
            format!("/api/v1/goroutines?pid={}", daemon.pid()),
            422,
            "not a Go program".to_string(),
        ),
        (
            "/api/v1/goroutines?pid=4194304".to_string(),
            404,
            "4194304".to_string(),
        ),
        (
            "/api/v1/goroutines?pid=abc".to_string(),
            400,
            "pid".to_string(),
        ),
        ("/api/v1/goroutines".to_string(), 400, "pid".to_string()),
        (
            format!("/api/v1/goroutines?pid={pid}&older_than=soon"),
            400,
            "older_than".to_string(),
        ),
    ] {
        let (got, body) = daemon.get(&path);
        let v: Value = serde_json::from_slice(&body).expect("JSON error");
        let text = v["error"].as_str().unwrap_or("").to_string();
        assert_eq!(got, status, "{path}: {text}");
        assert!(
            text.contains(&names) && text.lines().count() == 1,
            "{path}: {text}"
        );
    }
    let processes = daemon.json("/api/v1/processes?window=10m");
    let entry = processes["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("the Go program (pid {pid}) is not listed"))
        .clone();
    assert_eq!(entry["go"], true, "{entry}");

    // 4. The program exits: its series leave /metrics.
    drop(run);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = daemon.get("/metrics");
        let text = String::from_utf8_lossy(&body).to_string();
        if series_of(&text, "loupe_go_goroutines", pid, "state").is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the series of exited pid {pid} are still in /metrics"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The daemon's goroutine scheduling latency, read from the runtime's own histogram at every
/// census round, against the Go program's own `/sched/latencies:seconds` over a window it
/// runs between rounds (the gevents fixture idles before and after, blocked on stdin): the
/// waits the daemon adds up over the rounds enclosing the window are the program's.
#[test]
fn daemon_goroutine_sched_latency_matches_the_runtimes_own() {
    assert_root();
    let _serial = serial();
    let daemon = Daemon::start(
        "window = \"2s\"\ngoroutine_census_interval = \"1s\"\ngoroutine_census_processes = 1000\n",
    );
    let (version, _) = go_toolchains().pop().expect("a Go toolchain");
    let mut gevents =
        common::gevents::Gevents::start(&fixture(&format!("go{version}/gevents")), "window");
    let pid = gevents.pid;
    let count = |daemon: &Daemon| -> Option<u64> {
        let (status, body) = daemon.get("/metrics");
        assert_eq!(status, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        series_of(&text, "loupe_go_sched_latency_seconds_count", pid, "pid")
            .into_values()
            .next()
    };
    // The series appears at the second round that reads the program (a difference).
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        if count(&daemon).is_some() {
            // One more round, so a read that raced the program's start-up is behind us.
            std::thread::sleep(Duration::from_millis(2500));
            break count(&daemon).expect("the series stays");
        }
        assert!(
            Instant::now() < deadline,
            "no loupe_go_sched_latency_seconds series for the Go program in 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let truth = gevents.run_window();
    let program = truth["runtime_latency_count"].as_u64().expect("count");
    // Two rounds after the window: the daemon has read past its end.
    std::thread::sleep(Duration::from_millis(2500));
    let after = count(&daemon).expect("the series is still there");
    gevents.finish();
    let daemon_counted = after - before;
    eprintln!("goroutine scheduling waits: the daemon {daemon_counted}, the program {program}");
    // The same histogram: the daemon's span encloses the window; outside it the program is
    // idle but its runtime may schedule a few goroutines of its own.
    assert!(program >= 100, "the window sampled only {program} waits");
    assert!(
        daemon_counted >= program && daemon_counted <= program + program / 50 + 10,
        "the daemon counted {daemon_counted} waits, the program's runtime {program}"
    );
}

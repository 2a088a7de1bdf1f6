//! The Go HTTP server workload shared by `bench sched` and `bench goroutines`: the fixture
//! `fixtures/go/httpserver` on loopback, driven by `wrk` for a fixed time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use super::run_ok;

/// wrk's threads and connections: two client threads for the two CPUs, enough connections
/// to keep the server's goroutines busy.
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 32;

/// The Go HTTP server (fixtures/go/httpserver), serving until dropped.
pub(crate) struct HttpServer {
    child: Child,
    addr: String,
}

impl HttpServer {
    /// Starts `binary` on `addr` and waits until it serves.
    pub(crate) fn start(binary: &Path, addr: &str) -> Result<HttpServer> {
        let mut child = Command::new(binary)
            .arg(addr)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the server's first line")?;
        if !line.contains("listening") {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{} did not start: {line:?}", binary.display());
        }
        Ok(HttpServer {
            child,
            addr: addr.to_string(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Drives the server with `wrk` for `seconds`.
    pub(crate) fn load(&self, seconds: u32) -> Result<WrkRun> {
        let out = run_ok(Command::new("wrk").args([
            &format!("-t{WRK_THREADS}"),
            &format!("-c{WRK_CONNECTIONS}"),
            &format!("-d{seconds}s"),
            &format!("http://{}/", self.addr),
        ]))?;
        WrkRun::parse(&out)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the workload is called in reports.
pub(crate) fn label(seconds: u32) -> String {
    format!("Go HTTP server under wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s")
}

/// One `wrk` run's figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WrkRun {
    pub(crate) requests_per_sec: f64,
    pub(crate) requests: u64,
}

impl WrkRun {
    /// Reads wrk's summary: `  123456 requests in 5.00s, ...` and `Requests/sec: 24691.20`.
    fn parse(out: &str) -> Result<WrkRun> {
        let requests_per_sec = out
            .lines()
            .find(|l| l.starts_with("Requests/sec:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .with_context(|| format!("no Requests/sec in wrk's output {out:?}"))?;
        let requests = out
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("no request count in wrk's output {out:?}"))?;
        Ok(WrkRun {
            requests_per_sec,
            requests,
        })
    }
}

/// The cost of tracing to a throughput: the median over rounds of the same round's untraced
/// throughput / the traced one, minus 1.
pub(crate) fn throughput_cost(traced: &[f64], untraced: &[f64]) -> f64 {
    super::median(
        traced
            .iter()
            .zip(untraced)
            .map(|(r, base)| base / r - 1.0)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrks_summary() {
        // The shape of wrk 4.1's output (Debian's wrk), figures made up.
        let out = "Running 5s test @ http://127.0.0.1:8089/\n  2 threads and 32 connections\n  \
                   Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.00ms  \
                   0.50ms  10.00ms   90.00%\n  123456 requests in 5.00s, 40.00MB read\n\
                   Requests/sec:  24691.20\nTransfer/sec:      8.00MB\n";
        let run = WrkRun::parse(out).expect("parses");
        assert_eq!(run.requests, 123_456);
        assert!((run.requests_per_sec - 24_691.2).abs() < 1e-6);
        assert!(WrkRun::parse("Running 5s test\n").is_err());
    }
}

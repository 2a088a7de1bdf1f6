//! Command line: `loupe check`, `loupe profile`, `loupe stat` and `loupe daemon`.

mod debug_sched;
mod goroutines;
mod launch;
mod profile;
mod session;
mod stat;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    collectors::{cpu::UnwindMode, targets::TargetSpec},
    render::Format,
};

#[derive(Parser, Debug)]
#[command(
    name = "loupe",
    version,
    about = "eBPF observability and profiling: on-CPU flame graphs and pprof profiles"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report the kernel features loupe uses, and what each missing one disables.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Sample on-CPU or off-CPU stacks of processes, a command, or the whole host, to a file.
    Profile(ProfileArgs),
    /// Exact scheduling figures per process: on-CPU, off-CPU, run-queue waits and latency.
    Stat(StatArgs),
    /// Node daemon: continuous host-wide profiling served over HTTP (web UI, JSON API,
    /// /debug/pprof, Prometheus /metrics).
    Daemon(DaemonArgs),
    /// The goroutines of a running Go program, grouped by stack, or the leak view.
    Goroutines(goroutines::GoroutinesArgs),
    /// Scheduling probes on processes, printed as JSON (for tests; see cli/debug_sched.rs).
    #[command(hide = true)]
    DebugSched(DebugSchedArgs),
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Address to serve on; anything but loopback needs a bearer token in the config.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// TOML settings (window, retention, store cap, token, ...); embedded defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DebugSchedArgs {
    /// Process to observe (all its threads); repeat for more.
    #[arg(short, long = "pid", value_name = "PID", required = true)]
    pub pid: Vec<u32>,
    /// Longest run; it ends earlier when every process exited.
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time at the start whose data is left out (threads are tracked from their first
    /// switch-out on); ground truth is read when it ends.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// What to observe: processes, the whole host, or a command to launch. Shared by `profile`
/// and `stat`, which word the help in their own terms (`mut_arg` below each).
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["pid", "all", "command"])))]
pub struct TargetArgs {
    /// Observe this process (all its threads); repeat for more.
    #[arg(short, long = "pid", value_name = "PID")]
    pub pid: Vec<u32>,
    /// Observe every process on the host.
    #[arg(short, long)]
    pub all: bool,
    /// The command to start and observe, with its descendants.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

impl TargetArgs {
    /// The targets named, with a clear error for a process that does not exist.
    pub fn spec(&self) -> anyhow::Result<TargetSpec> {
        if self.all {
            return Ok(TargetSpec::All);
        }
        if !self.command.is_empty() {
            return Ok(TargetSpec::Command(self.command.clone()));
        }
        for &pid in &self.pid {
            if pid == 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                anyhow::bail!("no process with PID {pid}");
            }
        }
        Ok(TargetSpec::Pids(self.pid.clone()))
    }
}

#[derive(Args, Debug)]
#[command(
    mut_arg("pid", |a| a.help("Profile this process (all its threads); repeat for more")),
    mut_arg("all", |a| a.help("Profile every process on the host")),
    mut_arg("command", |a| a.help(
        "The command to start and profile, with its descendants: `loupe profile -- make -j2`"
    )),
)]
pub struct ProfileArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to profile: `500ms`, `10s`, `2m` (default 10s). Ctrl-C ends early and still
    /// writes. `--type goroutines` takes its census at once, or after this long if given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Samples per second per CPU.
    #[arg(short = 'F', long, default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub frequency: u64,
    /// What to profile: `cpu` (on-CPU samples), `offcpu` (time blocked, by the stack that
    /// blocked), or `cpu,offcpu` (both in one wall-clock view); `goroutines` (the live
    /// goroutines of Go processes per stack, like Go's goroutine profile).
    #[arg(
        short = 't',
        long = "type",
        value_enum,
        value_delimiter = ',',
        default_value = "cpu"
    )]
    pub types: Vec<ProfileTypeArg>,
    /// Output file; the format follows the extension (.svg, .pb.gz/.pprof, .folded/.txt,
    /// .json). Without it, a table of the top functions is printed.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Output format, overriding the extension.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,
    /// Rows of the top-functions table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// User-stack unwinding: `auto` is correct without frame pointers; `fp` is cheapest.
    #[arg(long, value_enum, default_value = "auto")]
    pub unwind: UnwindMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileTypeArg {
    Cpu,
    Offcpu,
    Goroutines,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("pid", |a| a.help("Report on this process (all its threads); repeat for more")),
    mut_arg("all", |a| a.help("Report on every process on the host")),
    mut_arg("command", |a| a.help(
        "The command to start and trace, with its descendants: `loupe stat -- make -j2`"
    )),
)]
pub struct StatArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// How long to trace: `500ms`, `10s`, `2m` (default 10s; with a command, until it exits).
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Print JSON (the stable schema in the README) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the JSON report to this file.
    #[arg(short, long, value_name = "FILE.json")]
    pub output: Option<PathBuf>,
    /// Processes shown in the table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Also trace goroutine events of the --pid Go processes (uprobes on their runtime):
    /// goroutines created and exited, and scheduling latency. Costs the traced program time
    /// at every goroutine switch (see the README).
    #[arg(long)]
    pub goroutine_events: bool,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 500ms, 10s or 2m ({e})"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    Ok(d)
}

/// Writes to stdout; a reader that went away (`loupe ... | head`) ends output quietly.
pub fn write_stdout(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { json } => crate::check::run(json),
        Command::Profile(args) => profile::run(args),
        Command::Stat(args) => stat::run(args),
        Command::Daemon(args) => crate::daemon::run(args.listen, args.config),
        Command::Goroutines(args) => goroutines::run(args),
        Command::DebugSched(args) => debug_sched::run(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_or_explain() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").unwrap_err().contains("`ten`"));
    }

    #[test]
    fn a_target_is_required_and_options_parse() {
        assert!(Cli::try_parse_from(["loupe", "profile"]).is_err());
        assert!(Cli::try_parse_from(["loupe", "profile", "--all", "-F", "0"]).is_err());
        let cli = Cli::try_parse_from(["loupe", "profile", "-o", "x.svg", "--", "sleep", "1"])
            .expect("valid");
        let Command::Profile(args) = cli.command else {
            panic!("profile")
        };
        assert_eq!(args.target.command, vec!["sleep", "1"]);
        assert_eq!(args.duration, None);
        assert_eq!(args.frequency, 99);
    }
}

//! Project tasks: `cargo xtask <setup|build|fixtures|run|test|bench>`.

mod bench;
mod build;
mod fixtures;
mod run;
mod setup;
mod test;
mod util;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "loupe's build, setup and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check prerequisites and install what is missing (apt packages, nightly rust-src,
    /// bpf-linker, Go toolchains, tracefs mount). Idempotent.
    Setup,
    /// Build the eBPF object (nightly) and the loupe daemon that embeds it.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build the C and Go test programs into target/fixtures/.
    Fixtures,
    /// Setup, build, and run loupe as root (default: `loupe daemon` and its web UI).
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for loupe, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Setup, build, build fixtures, run the workspace tests, rustfmt and clippy.
    Test {
        /// Arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// Measure loupe's cost: a fixed-work benchmark under no profiler, loupe at 19 and 99 Hz,
    /// and perf record, side by side; writes target/bench/report.md. `bench churn` measures
    /// loupe's memory and state under process and binary churn instead.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        mode: Option<BenchMode>,
        /// Interleaved rounds (medians are reported).
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Work per benchmark run (passed to bench_work).
        #[arg(long, default_value_t = 8000)]
        work: u32,
    },
}

#[derive(Subcommand)]
enum BenchMode {
    /// `loupe profile --all` while new programs are compiled and run without pause: loupe's
    /// RSS after 2 minutes and at the end, and its state counts; writes target/bench/churn.md.
    Churn {
        /// Length of the profile, in minutes.
        #[arg(long, default_value_t = 20)]
        minutes: u64,
        /// Run `loupe daemon` (with its defaults) instead of `loupe profile --all`; writes
        /// target/bench/churn-daemon.md.
        #[arg(long)]
        daemon: bool,
    },
    /// `loupe profile -- cargo build` of a small crate with one dependency, from scratch:
    /// loupe's peak RSS, its samples, and the share of rustc's samples with every frame
    /// named; writes target/bench/build.md.
    Build {
        /// Rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A Go program switching goroutines a lot, and a Go HTTP server under wrk, with
    /// nothing, `loupe stat --pid` and `loupe stat --pid --goroutine-events` (the server also
    /// with a census every second); writes target/bench/goroutines.md.
    Goroutines {
        /// Interleaved rounds (medians are reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of wrk per HTTP server run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
    /// Context-switch-heavy work (`perf bench sched pipe`, a Go HTTP server under wrk) with
    /// nothing, `loupe stat --all`, `loupe profile --type offcpu --all`, `loupe daemon` and
    /// `perf record -e sched:sched_switch -a -g`; writes target/bench/sched.md.
    Sched {
        /// Interleaved rounds (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Pipe round trips per run.
        #[arg(long, default_value_t = 300_000)]
        loops: u32,
        /// Seconds of wrk per run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build { release } => build::build(release).map(|_| ()),
        Cmd::Fixtures => fixtures::build_all().map(|_| ()),
        Cmd::Run { release, args } => run::run(release, args),
        Cmd::Test { args } => test::run(args),
        Cmd::Bench {
            mode: Some(BenchMode::Churn { minutes, daemon }),
            ..
        } => bench::churn::run(minutes, daemon),
        Cmd::Bench {
            mode: Some(BenchMode::Build { rounds }),
            ..
        } => bench::cargo_build::run(rounds),
        Cmd::Bench {
            mode: Some(BenchMode::Goroutines { rounds, seconds }),
            ..
        } => bench::goroutines::run(rounds, seconds),
        Cmd::Bench {
            mode:
                Some(BenchMode::Sched {
                    rounds,
                    loops,
                    seconds,
                }),
            ..
        } => bench::sched::run(rounds, loops, seconds),
        Cmd::Bench {
            mode: None,
            rounds,
            work,
        } => bench::run(rounds, work),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cmd {
        Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn run_takes_loupe_args_after_double_dash() {
        match parse(&["run", "--release", "--", "profile", "--pid", "1"]) {
            Cmd::Run { release, args } => {
                assert!(release);
                assert_eq!(args, ["profile", "--pid", "1"]);
            }
            _ => panic!("not run"),
        }
        match parse(&["run"]) {
            Cmd::Run { release, args } => assert!(!release && args.is_empty()),
            _ => panic!("not run"),
        }
    }

    #[test]
    fn test_passes_everything_after_double_dash_to_cargo_test() {
        match parse(&["test", "--", "go_split", "--", "--nocapture"]) {
            Cmd::Test { args } => assert_eq!(args, ["go_split", "--", "--nocapture"]),
            _ => panic!("not test"),
        }
    }

    #[test]
    fn bench_churn_takes_minutes_and_defaults_to_twenty() {
        match parse(&["bench", "churn", "--minutes", "3"]) {
            Cmd::Bench {
                mode: Some(BenchMode::Churn { minutes, .. }),
                ..
            } => assert_eq!(minutes, 3),
            _ => panic!("not bench churn"),
        }
        match parse(&["bench", "churn"]) {
            Cmd::Bench {
                mode: Some(BenchMode::Churn { minutes, .. }),
                ..
            } => assert_eq!(minutes, 20),
            _ => panic!("not bench churn"),
        }
        match parse(&["bench", "--rounds", "3"]) {
            Cmd::Bench {
                mode: None, rounds, ..
            } => assert_eq!(rounds, 3),
            _ => panic!("not bench"),
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

//! `loupe`: eBPF observability and profiling.
//!
//! Data flows one way: probe (`ebpf/`) -> map/ring buffer -> collector (`collectors/`) ->
//! unwinding and aggregation (`unwind/`, `aggregate`) -> symbolization (`symbolize/`) ->
//! renderers (`render/`) -> CLI (`cli/`).

mod aggregate;
mod bpf;
mod btf;
mod check;
mod cli;
mod collectors;
mod daemon;
mod engine;
mod histogram;
// Parts of the census API serve only its tests and later consumers (the daemon).
#[allow(dead_code)]
mod goroutines;
mod modules;
mod process;
mod profile;
mod render;
mod server;
mod stat;
mod symbolize;
mod unwind;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loupe: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

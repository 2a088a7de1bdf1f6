//! `loupe`: eBPF observability and profiling.
//!
//! Data flows one way: probe -> map/ring buffer -> collector -> aggregate -> renderer -> CLI.

mod profile;
mod render;
mod symbolize;

fn main() {
    println!("loupe: not yet wired");
}

//! Sizes of the kernel maps that depend on what a session runs, set at load: the object's
//! built-in sizes are the largest any session needs (a busy many-CPU host), and most of
//! that memory is preallocated kernel memory, so a session sizes them to its CPUs and
//! sampling rate, and shrinks the maps of capabilities it does not run to one entry.

use loupe_ebpf::{cpu::MAX_STACK_TRACES, sched::MAX_OFFCPU_STACK_TRACES};

use super::Capability;

/// How long one set of the CPU stack maps is written before the other takes over
/// (`collectors::cpu`'s rotation).
const STACK_SET_SECONDS: f64 = 0.25;
/// Stack-map buckets per stack a set can receive: a new stack whose bucket holds another is
/// lost (counted), so the maps stay sparse (about 1% of inserts collide at most).
const BUCKETS_PER_STACK: f64 = 64.0;
const MIN_STACK_TRACES: u32 = 1024;

/// Bytes of ring buffer per sample a drain period may hold: a sample copies up to 256 KiB
/// of stack, and the reader drains at least every 40 ms (more often when half full).
const RING_BYTES_PER_SAMPLE_SECOND: f64 = 256.0 * 1024.0 * 0.2;
const MIN_RING_BYTES: u32 = 2 << 20;
const MAX_RING_BYTES: u32 = 8 << 20;

/// `(map name, entries)` for [`crate::bpf::load_sized`].
pub fn map_sizes(capabilities: &[Capability], cpus: u32) -> Vec<(&'static str, u32)> {
    let mut sizes = Vec::new();
    let cpu_hz = capabilities.iter().find_map(|c| match c {
        Capability::Cpu { frequency_hz, .. } => Some(*frequency_hz),
        _ => None,
    });
    let sched = capabilities.iter().find_map(|c| match c {
        Capability::Sched { offcpu_stacks } => Some(*offcpu_stacks),
        _ => None,
    });
    let goroutines = capabilities
        .iter()
        .any(|c| matches!(c, Capability::GoroutineEvents { .. }));

    let stack_traces = match cpu_hz {
        Some(hz) => {
            let per_set = f64::from(cpus) * hz as f64 * STACK_SET_SECONDS;
            power_of_two((per_set * BUCKETS_PER_STACK) as u64)
                .clamp(MIN_STACK_TRACES, MAX_STACK_TRACES)
        }
        None => 1,
    };
    for name in [
        "USER_STACKS_0",
        "USER_STACKS_1",
        "KERNEL_STACKS_0",
        "KERNEL_STACKS_1",
    ] {
        sizes.push((name, stack_traces));
    }
    if cpu_hz.is_none() {
        sizes.extend([("CPU_COUNTS", 1), ("STACK_HINTS", 1)]);
    }

    let offcpu_stacks = if sched == Some(true) {
        MAX_OFFCPU_STACK_TRACES
    } else {
        1
    };
    for name in [
        "OFFCPU_USER_STACKS_0",
        "OFFCPU_USER_STACKS_1",
        "OFFCPU_KERNEL_STACKS_0",
        "OFFCPU_KERNEL_STACKS_1",
    ] {
        sizes.push((name, offcpu_stacks));
    }
    if sched != Some(true) {
        sizes.extend([("OFFCPU_COUNTS_0", 1), ("OFFCPU_COUNTS_1", 1)]);
    }
    if sched.is_none() {
        sizes.extend([
            ("SCHED_THREADS", 1),
            ("THREAD_STATS_0", 1),
            ("THREAD_STATS_1", 1),
            ("RUNQ_HIST_0", 1),
            ("RUNQ_HIST_1", 1),
        ]);
    }
    if !goroutines {
        sizes.extend([
            ("GOROUTINE_STATS", 1),
            ("GOROUTINE_SINCE", 1),
            ("GOROUTINE_SITES", 1),
            ("GOROUTINE_PARENTS", 1),
        ]);
    }

    // Off-CPU stack copies come at the rate threads block, not a sampling rate: the full ring.
    let ring = match (cpu_hz, sched) {
        (_, Some(true)) => MAX_RING_BYTES,
        (Some(hz), _) => {
            let bytes = f64::from(cpus) * hz as f64 * RING_BYTES_PER_SAMPLE_SECOND;
            power_of_two(bytes as u64).clamp(MIN_RING_BYTES, MAX_RING_BYTES)
        }
        (None, _) => MIN_RING_BYTES,
    };
    sizes.push(("EVENTS", ring));
    sizes
}

/// The smallest power of two at least `n` (saturating at 2^31).
fn power_of_two(n: u64) -> u32 {
    n.max(1)
        .checked_next_power_of_two()
        .map_or(1 << 31, |p| p.min(1 << 31) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collectors::cpu::UnwindMode;

    fn size(sizes: &[(&str, u32)], name: &str) -> u32 {
        sizes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| panic!("{name} not sized"))
    }

    fn cpu(hz: u64) -> Capability {
        Capability::Cpu {
            frequency_hz: hz,
            unwind: UnwindMode::Auto,
        }
    }

    #[test]
    fn stack_maps_follow_cpus_and_rate_within_bounds() {
        // 2 CPUs at 99 Hz: ~50 samples per set, 64 buckets each.
        let s = map_sizes(&[cpu(99)], 2);
        assert_eq!(size(&s, "USER_STACKS_0"), 4096);
        assert_eq!(size(&s, "KERNEL_STACKS_1"), 4096);
        // The daemon's 19 Hz: the floor.
        assert_eq!(
            size(&map_sizes(&[cpu(19)], 2), "USER_STACKS_1"),
            MIN_STACK_TRACES
        );
        // A large host at a high rate: the object's own (largest) size.
        assert_eq!(
            size(&map_sizes(&[cpu(999)], 256), "KERNEL_STACKS_0"),
            MAX_STACK_TRACES
        );
        // The ring: 8 MiB at 99 Hz on 2 CPUs, 2 MiB at 19 Hz.
        assert_eq!(size(&s, "EVENTS"), MAX_RING_BYTES);
        assert_eq!(size(&map_sizes(&[cpu(19)], 2), "EVENTS"), 2 << 20);
    }

    #[test]
    fn every_sized_map_is_in_the_object() {
        use object::{Object, ObjectSymbol};
        let elf = object::File::parse(crate::bpf::OBJECT).expect("the eBPF object parses");
        let names: std::collections::HashSet<&str> =
            elf.symbols().filter_map(|s| s.name().ok()).collect();
        // Every capability off, then every one on: between them, every name is sized.
        for capabilities in [
            vec![],
            vec![
                cpu(99),
                Capability::Sched {
                    offcpu_stacks: true,
                },
            ],
        ] {
            for (name, _) in map_sizes(&capabilities, 2) {
                assert!(names.contains(name), "no map {name} in the eBPF object");
            }
        }
    }

    #[test]
    fn maps_of_capabilities_not_run_shrink_to_one_entry() {
        let totals_only = map_sizes(
            &[
                cpu(19),
                Capability::Sched {
                    offcpu_stacks: false,
                },
            ],
            2,
        );
        for name in ["OFFCPU_USER_STACKS_0", "OFFCPU_COUNTS_1", "GOROUTINE_SINCE"] {
            assert_eq!(size(&totals_only, name), 1, "{name}");
        }
        assert!(totals_only.iter().all(|(n, _)| *n != "THREAD_STATS_0"));
        let stacks = map_sizes(
            &[Capability::Sched {
                offcpu_stacks: true,
            }],
            2,
        );
        assert_eq!(
            size(&stacks, "OFFCPU_KERNEL_STACKS_1"),
            MAX_OFFCPU_STACK_TRACES
        );
        assert_eq!(size(&stacks, "USER_STACKS_0"), 1);
        assert_eq!(size(&stacks, "CPU_COUNTS"), 1);
        assert_eq!(size(&stacks, "EVENTS"), MAX_RING_BYTES);
    }
}

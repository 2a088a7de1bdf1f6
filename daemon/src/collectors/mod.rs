//! Userspace halves of the kernel programs, one per capability (`ebpf/src/probes/<name>.rs`
//! <-> `collectors/<name>.rs`): they attach the programs, configure their maps, and read
//! what the kernel recorded. They know nothing of symbols or output formats.

pub mod cpu;
pub mod goroutines;
pub mod sched;
pub mod stacks;
pub mod targets;

use aya::Ebpf;

use crate::bpf::BpfError;

/// Takes ownership of map `name` as the typed map `T`.
pub(crate) fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_string(),
        },
    })?;
    T::try_from(map).map_err(|source| BpfError::Map { name, source })
}

/// Borrows map `name` as the typed map `T` (for configuration written once).
fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.map_mut(name).ok_or(BpfError::Map {
        name,
        source: aya::maps::MapError::InvalidName {
            name: name.to_string(),
        },
    })?;
    T::try_from(map).map_err(|source| BpfError::Map { name, source })
}

/// Per-CPU counters summed over CPUs, named by index (`names[i]` for slot `i`).
pub(crate) fn sum_per_cpu(
    counters: &aya::maps::PerCpuArray<aya::maps::MapData, u64>,
    names: &[&str],
) -> Vec<(String, u64)> {
    (0..names.len() as u32)
        .map(|i| {
            let total = counters
                .get(&i, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0);
            (names[i as usize].to_string(), total)
        })
        .collect()
}

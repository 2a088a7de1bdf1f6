//! What a capability implements to plug into the engine: the kernel features it needs, the
//! ring-buffer records it consumes, a periodic drain of its maps, and its loss counters.

use crate::{bpf::BpfError, process::ProcessTable};

use super::store::Store;

/// A kernel facility a capability uses; `loupe check` probes each one and reports what its
/// absence disables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureKind {
    /// A tracefs tracepoint `category:name`.
    Tracepoint {
        category: &'static str,
        name: &'static str,
    },
    /// A BTF-enabled tracepoint (`tp_btf/name`), which needs kernel BTF.
    BtfTracepoint { name: &'static str },
    /// The software cpu-clock perf event.
    PerfCpuClock,
    /// Uprobes (the `uprobe` perf event source).
    Uprobes,
}

/// One feature and why a capability needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub kind: FeatureKind,
    /// What it is used for, as `loupe check` prints it.
    pub used_for: &'static str,
}

/// What collectors may touch while handling records or draining: the processes (to unwind
/// and resolve user addresses) and the store of the current window.
pub struct Context<'a> {
    pub processes: &'a mut ProcessTable,
    pub store: &'a mut Store,
}

/// The userspace half of one capability, driven by the engine's collection thread.
///
/// Collectors never symbolize or render: they unwind what needs the live process (user
/// stacks) into raw frames and aggregate them in the store, so collection never waits on
/// the slow parts.
pub trait Collector: Send {
    /// Stable name: `cpu`, `sched`, ... (in messages, metrics and `loupe check`).
    fn name(&self) -> &'static str;

    /// Whether ring-buffer records tagged `kind` are this collector's.
    fn handles(&self, kind: u32) -> bool;

    /// One record of a kind this collector [handles](Self::handles).
    fn on_record(&mut self, kind: u32, record: &[u8], cx: &mut Context<'_>);

    /// Periodic drain of in-kernel aggregates into the store (every engine tick).
    fn tick(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError>;

    /// A window boundary, first half: stop adding to what the next drain takes (a new
    /// generation of in-kernel maps) and drain what was closed before. By default, a tick.
    fn seal(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError> {
        self.tick(cx)
    }

    /// A window boundary, second half, once the engine handled the ring-buffer records
    /// written meanwhile: drain what [`Self::seal`] closed, so the window ends at the seal
    /// rather than up to a tick later. By default nothing: the next tick drains it.
    fn drain_sealed(&mut self, _cx: &mut Context<'_>) -> Result<(), BpfError> {
        Ok(())
    }

    /// The final drain, when the session stops: everything still in the kernel.
    fn finish(&mut self, cx: &mut Context<'_>) -> Result<(), BpfError>;

    /// The launched command exists (stopped before its exec): attach what must see it from
    /// its first instruction and needs its pid (uprobes scoped to it).
    fn command_started(&mut self, _ebpf: &mut aya::Ebpf, _pid: u32) -> Result<(), BpfError> {
        Ok(())
    }

    /// Cumulative sample and loss counters by name (`drop_*` are losses).
    fn counters(&self) -> Vec<(String, u64)>;
}

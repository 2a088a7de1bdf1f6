//! Profiled processes: their mappings, the modules behind them, and an unwinder per
//! address space. Loaded on first sight and reloaded after exec or on an unknown address.

pub mod maps;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use maps::Mapping;

use crate::{
    modules::{Module, ModuleCache, ModuleId},
    unwind::NativeUnwinder,
};

/// An executable mapping and the module behind it (None: anonymous or unreadable).
pub struct CodeMapping {
    pub mapping: Mapping,
    pub module: Option<Arc<Module>>,
    /// Where the module's stated address 0 lands in this process.
    pub base_avma: u64,
}

/// A user address resolved against a process's mappings.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserAddress {
    /// In a module, at a stated address (what symbol tables use).
    Module { module: ModuleId, svma: u64 },
    /// In no module we could read: named by the mapping's file name (or `[anon]`) and the
    /// offset in it (file offset, or the address itself for anonymous memory).
    Unnamed { label: Arc<str>, offset: u64 },
}

impl UserAddress {
    /// An address in no mapping we know of.
    pub fn unknown(avma: u64) -> UserAddress {
        UserAddress::Unnamed {
            label: "[unknown]".into(),
            offset: avma,
        }
    }
}

pub struct Process {
    /// The process's name (`/proc/PID/comm` of the group leader).
    pub comm: Option<String>,
    pub code: Vec<CodeMapping>,
    pub unwinder: NativeUnwinder,
    loaded_at: Instant,
    /// How many times the maps were reread because of unknown addresses.
    reloads: u32,
    /// The engine tick at which the process exited, once it has.
    exited_at_tick: Option<u64>,
}

impl Process {
    pub fn code_at(&self, avma: u64) -> Option<&CodeMapping> {
        self.code.iter().find(|c| c.mapping.contains(avma))
    }

    pub fn resolve(&self, avma: u64) -> UserAddress {
        match self.code_at(avma) {
            Some(CodeMapping {
                module: Some(m),
                base_avma,
                ..
            }) => UserAddress::Module {
                module: m.id,
                svma: avma.wrapping_sub(*base_avma),
            },
            Some(CodeMapping { mapping, .. }) => {
                let label = mapping
                    .path
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into())
                    .unwrap_or_else(|| "[anon]".into());
                let offset = if mapping.is_file() {
                    avma - mapping.start + mapping.offset
                } else {
                    avma
                };
                UserAddress::Unnamed { label, offset }
            }
            None => UserAddress::unknown(avma),
        }
    }
}

/// How soon a process's maps may be reread when addresses fall outside them: quickly for
/// the first few times (a starting process maps its libraries within milliseconds, and may
/// live only a little longer), then rarely (code outside every mapping is then garbage from
/// a bad unwind, and rereading cannot help).
const QUICK_RELOADS: u32 = 16;
const QUICK_RELOAD_INTERVAL: Duration = Duration::ZERO;
const SLOW_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct ProcessTable {
    processes: HashMap<u32, Process>,
    pub modules: ModuleCache,
    /// Pids whose exit was seen, with its tick, until evicted: one is never loaded again
    /// (a zombie's /proc still reads, with no mappings), or it would never be evicted. A pid
    /// reused by a fork within the grace period is named from its exec, or after it.
    exited: HashMap<u32, u64>,
}

impl ProcessTable {
    /// The process, loading it on first sight. None if it is gone and was never loaded.
    pub fn get(&mut self, pid: u32) -> Option<&mut Process> {
        if !self.processes.contains_key(&pid) {
            if self.exited.contains_key(&pid) {
                return None;
            }
            let process = self.load(pid)?;
            self.processes.insert(pid, process);
        }
        self.processes.get_mut(&pid)
    }

    /// Processes held (a state count).
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    /// Process `pid` exited at engine tick `tick`: it is kept until [`Self::evict_exited`]
    /// passes that tick, so samples still in flight resolve against its mappings.
    pub fn exited(&mut self, pid: u32, tick: u64) {
        self.exited.entry(pid).or_insert(tick);
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited_at_tick.get_or_insert(tick);
        }
    }

    /// Forgets processes that exited at or before `tick` (their modules stay cached while
    /// a window still refers to them); returns how many.
    pub fn evict_exited(&mut self, tick: u64) -> usize {
        let before = self.processes.len();
        self.processes
            .retain(|_, p| p.exited_at_tick.is_none_or(|exited| exited > tick));
        self.exited.retain(|_, &mut exited| exited > tick);
        before - self.processes.len()
    }

    /// Rereads the maps of `pid` if any of `avmas` is outside them (a library mapped since we
    /// read them), as often as [`QUICK_RELOADS`] and the reload intervals allow. Returns
    /// whether it reread them.
    pub fn refresh_for(&mut self, pid: u32, avmas: &[u64]) -> bool {
        let Some(current) = self.processes.get(&pid) else {
            return false;
        };
        let interval = if current.reloads < QUICK_RELOADS {
            QUICK_RELOAD_INTERVAL
        } else {
            SLOW_RELOAD_INTERVAL
        };
        if current.loaded_at.elapsed() < interval
            || avmas.iter().all(|&a| current.code_at(a).is_some())
        {
            return false;
        }
        let (reloads, exited_at_tick) = (current.reloads + 1, current.exited_at_tick);
        match self.load(pid) {
            Some(mut process) => {
                process.reloads = reloads;
                process.exited_at_tick = exited_at_tick;
                self.processes.insert(pid, process);
                true
            }
            None => false,
        }
    }

    /// Reads loaded process `pid`'s mappings again, keeping what was known if it is gone.
    /// For the libraries the dynamic loader maps just after exec, before samples need them.
    pub fn reread(&mut self, pid: u32) {
        let Some(reloads) = self
            .processes
            .get(&pid)
            .filter(|p| p.exited_at_tick.is_none())
            .map(|p| p.reloads)
        else {
            return;
        };
        if let Some(mut process) = self.load(pid) {
            process.reloads = reloads;
            self.processes.insert(pid, process);
        }
    }

    /// The process exec'd: its address space is new. Read it now, while the process surely
    /// exists (a short-lived one may be gone by its last sample); the libraries the dynamic
    /// loader maps next are picked up by `refresh_for`.
    pub fn exec(&mut self, pid: u32) {
        // A reused pid: the new process is not the one that exited.
        self.exited.remove(&pid);
        self.processes.remove(&pid);
        let _ = self.get(pid);
    }

    /// Whether loaded process `pid` is (still, or now) named `comm`; true when not loaded.
    /// A mismatch is checked against the live name, so a process that renamed itself
    /// (`prctl(PR_SET_NAME)`) is told apart from a sample of the image it replaced by exec.
    pub fn named(&mut self, pid: u32, comm: &str) -> bool {
        let Some(process) = self.get(pid) else {
            return true;
        };
        match process.comm.as_deref() {
            None => true,
            Some(known) if known == comm => true,
            Some(_) => match read_comm(pid) {
                Some(live) if live == comm => {
                    process.comm = Some(live);
                    true
                }
                _ => false,
            },
        }
    }

    pub fn comm(&self, pid: u32) -> Option<&str> {
        self.processes.get(&pid)?.comm.as_deref()
    }

    fn load(&mut self, pid: u32) -> Option<Process> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
        let comm = read_comm(pid);
        let mut unwinder = NativeUnwinder::default();
        let mut code = Vec::new();
        for mapping in maps::parse(&text).into_iter().filter(|m| m.executable) {
            let module = self.modules.for_mapping(pid, &mapping);
            let base_avma = module
                .as_ref()
                .and_then(|m| m.base_avma(&mapping))
                .unwrap_or(mapping.start);
            if let Some(m) = &module {
                unwinder.add_module(m.unwind_module(mapping.start..mapping.end, base_avma));
            }
            code.push(CodeMapping {
                mapping,
                module,
                base_avma,
            });
        }
        Some(Process {
            comm,
            code,
            unwinder,
            loaded_at: Instant::now(),
            reloads: 0,
            exited_at_tick: None,
        })
    }
}

fn read_comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end_matches('\n').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose exit was seen is not loaded again until evicted (a zombie's /proc
    /// would load with no mappings and never be evicted); an exec of its pid starts afresh.
    #[test]
    fn exited_pids_are_not_reloaded_until_evicted() {
        let me = std::process::id();
        let mut table = ProcessTable::default();
        table.exited(me, 7);
        assert!(table.get(me).is_none(), "loaded after its exit was seen");
        assert_eq!(table.len(), 0);
        table.evict_exited(7);
        assert!(
            table.get(me).is_some(),
            "not loaded once the exit was evicted"
        );
        table.exited(me, 9);
        table.exec(me);
        assert!(
            table.get(me).is_some(),
            "an exec of the pid is a new process"
        );
        table.reread(me);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.evict_exited(100),
            0,
            "the exec'd process is not exited"
        );
    }
}

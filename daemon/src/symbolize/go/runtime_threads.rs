//! Go runtime threads that are not running the program: an M with no goroutine to run parks
//! in the scheduler (`findRunnable` -> `stopm`, or blocks in the netpoller), and `sysmon` and
//! the template thread wake on their own timers. Their off-CPU time is the runtime idling,
//! not the program blocking, and their on-CPU time (spinning Ms) is scheduler overhead: a
//! profile marks them so a reader does not mistake one for the other.

/// What a runtime thread is doing instead of running the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// An M looking for work or parked for lack of it.
    IdleWorker,
    /// The runtime's monitor thread (preemption, netpoll, GC pacing).
    Sysmon,
}

impl ThreadRole {
    /// The synthetic root frame that marks such stacks in profiles.
    pub fn frame(self) -> &'static str {
        match self {
            ThreadRole::IdleWorker => "[go runtime: idle worker]",
            ThreadRole::Sysmon => "[go runtime: sysmon]",
        }
    }

    /// The `go_thread` label value.
    pub fn label(self) -> &'static str {
        match self {
            ThreadRole::IdleWorker => "idle",
            ThreadRole::Sysmon => "sysmon",
        }
    }
}

/// The role of a thread whose stack has these function names (any order), if it is a runtime
/// thread without program work. `findrunnable` is the name before Go 1.21.
pub fn thread_role<'a>(functions: impl IntoIterator<Item = &'a str>) -> Option<ThreadRole> {
    for function in functions {
        match function {
            "runtime.findRunnable"
            | "runtime.findrunnable"
            | "runtime.stopm"
            | "runtime.templateThread" => return Some(ThreadRole::IdleWorker),
            "runtime.sysmon" => return Some(ThreadRole::Sysmon),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_parking_and_sysmon_are_recognized_and_program_stacks_are_not() {
        let parked = [
            "runtime.futex",
            "runtime.futexsleep",
            "runtime.notesleep",
            "runtime.mPark",
            "runtime.stopm",
            "runtime.findRunnable",
            "runtime.schedule",
            "runtime.park_m",
            "runtime.mcall",
        ];
        assert_eq!(thread_role(parked), Some(ThreadRole::IdleWorker));
        assert_eq!(
            thread_role(["runtime.usleep", "runtime.sysmon", "runtime.mstart1"]),
            Some(ThreadRole::Sysmon)
        );
        let program = [
            "syscall.Syscall",
            "syscall.read",
            "main.readPipe",
            "main.main",
            "runtime.main",
        ];
        assert_eq!(thread_role(program), None);
    }
}

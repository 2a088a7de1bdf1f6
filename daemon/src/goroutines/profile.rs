//! The goroutine profile (`loupe profile --type goroutines`): live goroutines counted per
//! stack, as Go's own `/debug/pprof/goroutine` counts them (the runtime's own goroutines
//! left out), one [`Profile`] of [`ProfileType::Goroutines`] that every renderer reads.
//!
//! Each sample is one (stack, state, wait reason, creation site) with the number of
//! goroutines in it, labelled `state` (the runtime's state name), `wait_reason` (waiting
//! goroutines only) and `created_by` (the function whose `go` statement created them).
//! `tid` is 0: goroutines are not threads. A running goroutine's stack cannot be read from
//! outside (its registers are live), so it shows as one `[running]` frame; a stack that
//! could not be unwound to its root ends with `[truncated]`. Losses are the drop counters
//! `goroutines_skipped` and `goroutine_stacks_truncated`.

use std::collections::HashMap;
use std::time::Duration;

use super::snapshot::{NamedFrame, Snapshot};
use super::StackStatus;
use crate::profile::{Frame, FrameId, FrameKind, Profile, ProfileType, Sample};

pub const DROP_SKIPPED: &str = "goroutines_skipped";
pub const DROP_TRUNCATED: &str = "goroutine_stacks_truncated";

/// The goroutine profile of one snapshot; `target` names what was profiled (`pid 1234`).
pub fn profile(snapshot: &Snapshot, target: String) -> Profile {
    let mut frames: Vec<Frame> = Vec::new();
    let mut frame_ids: HashMap<Frame, FrameId> = HashMap::new();
    let mut intern = |frame: Frame| -> FrameId {
        *frame_ids.entry(frame.clone()).or_insert_with(|| {
            frames.push(frame);
            (frames.len() - 1) as FrameId
        })
    };
    // (labels, stack) -> goroutines.
    type Key = (Vec<(String, String)>, Vec<FrameId>);
    let mut counts: HashMap<Key, u64> = HashMap::new();
    for g in snapshot.user_goroutines() {
        let mut stack: Vec<FrameId> = g
            .stack
            .iter()
            .map(|f| intern(user_frame(f, &snapshot.executable)))
            .collect();
        match g.stack_status {
            StackStatus::Running => stack.push(intern(synthetic("[running]"))),
            StackStatus::Truncated => stack.push(intern(synthetic("[truncated]"))),
            StackStatus::Complete | StackStatus::StackSwitch | StackStatus::None => {}
        }
        let mut labels = vec![("state".to_string(), g.state.name().to_string())];
        if let Some(reason) = &g.wait_reason {
            labels.push(("wait_reason".to_string(), reason.clone()));
        }
        if let Some(site) = &g.created_by {
            labels.push(("created_by".to_string(), site.function.clone()));
        }
        *counts.entry((labels, stack)).or_default() += 1;
    }
    let mut samples: Vec<Sample> = counts
        .into_iter()
        .map(|((labels, stack), n)| Sample {
            pid: snapshot.pid,
            tid: 0,
            comm: snapshot.comm.clone(),
            labels,
            stack,
            values: vec![n],
        })
        .collect();
    samples.sort_by(|a, b| {
        b.values
            .cmp(&a.values)
            .then_with(|| a.labels.cmp(&b.labels))
            .then_with(|| a.stack.cmp(&b.stack))
    });
    Profile {
        profile_type: ProfileType::Goroutines,
        target,
        start_time: snapshot.taken_at,
        duration: Duration::ZERO,
        frequency_hz: 0,
        frames: frames.into_iter().map(std::sync::Arc::new).collect(),
        samples,
        drops: vec![
            (DROP_SKIPPED.to_string(), snapshot.skipped),
            (DROP_TRUNCATED.to_string(), snapshot.truncated_stacks),
        ],
    }
}

fn user_frame(f: &NamedFrame, executable: &str) -> Frame {
    Frame {
        function: f.function.clone(),
        module: executable.to_string(),
        file: f.file.clone(),
        line: f.line,
        inlined: f.inlined,
        kind: FrameKind::User,
    }
}

fn synthetic(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        module: String::new(),
        file: None,
        line: None,
        inlined: false,
        kind: FrameKind::Synthetic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goroutines::report::tests::{goroutine, snapshot};
    use crate::goroutines::GStatus::*;

    #[test]
    fn goroutines_count_per_stack_and_labels() {
        let recv = ["runtime.gopark", "main.recv", "runtime.goexit"];
        let mut gs = vec![
            goroutine(Waiting, Some("chan receive"), Some(1), "main.spawn", &recv),
            goroutine(Waiting, Some("chan receive"), None, "main.spawn", &recv),
            goroutine(Waiting, Some("select"), None, "main.spawn", &recv),
            goroutine(Running, None, None, "main.spawn", &[]),
        ];
        gs[3].stack_status = StackStatus::Running;
        let mut system = goroutine(Waiting, Some("GC worker (idle)"), None, "runtime.gc", &recv);
        system.system = true;
        gs.push(system);
        let p = profile(&snapshot(gs), "pid 42".into());
        assert_eq!(p.total(), 4, "the runtime's own goroutine is left out");
        assert_eq!(p.samples.len(), 3);
        let top = &p.samples[0];
        assert_eq!(top.values, [2]);
        assert!(top
            .labels
            .contains(&("wait_reason".into(), "chan receive".into())));
        let leaf = &p.frames[top.stack[0] as usize];
        assert_eq!(
            (leaf.function.as_str(), leaf.module.as_str()),
            ("runtime.gopark", "app")
        );
        let running = p
            .samples
            .iter()
            .find(|s| s.labels.contains(&("state".into(), "running".into())))
            .expect("running sample");
        assert_eq!(p.frames[running.stack[0] as usize].function, "[running]");
        assert_eq!(p.drops.len(), 2);
    }
}

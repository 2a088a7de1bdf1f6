//! Folded stacks, the input format of Brendan Gregg's `flamegraph.pl` and inferno:
//!
//! ```text
//! comm;root;...;leaf count
//! ```
//!
//! One line per distinct stack, root first, the process name (`Sample::comm`) as the root
//! frame. Samples of different threads with the same process name and stack are merged.
//! Kernel frames carry the suffix `_[k]` so flame graph palettes can color them; every other
//! frame (inline ones included) is the exact function name. `;` in names becomes `:` and line
//! breaks become spaces, as `stackcollapse-perf.pl` does. Lines are sorted.

use std::collections::BTreeMap;
use std::io::Write;

use crate::profile::{FrameKind, Profile};

use super::RenderError;

/// Suffix of kernel frames, as Brendan Gregg's `stackcollapse-*` scripts write it.
pub const KERNEL_SUFFIX: &str = "_[k]";

/// Writes `profile` as folded stacks.
pub fn render(profile: &Profile, out: &mut dyn Write) -> Result<(), RenderError> {
    for (stack, count) in lines(profile)? {
        writeln!(out, "{stack} {count}")?;
    }
    Ok(())
}

/// The folded stacks without their counts, sorted, with their merged counts.
/// Stacks whose total count is zero are left out.
pub fn lines(profile: &Profile) -> Result<Vec<(String, u64)>, RenderError> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = String::new();
    for sample in &profile.samples {
        line.clear();
        push_sanitized(&mut line, &sample.comm);
        for &id in sample.stack.iter().rev() {
            let frame = super::frame(profile, id)?;
            line.push(';');
            push_sanitized(&mut line, &frame.function);
            if frame.kind == FrameKind::Kernel {
                line.push_str(KERNEL_SUFFIX);
            }
        }
        // Look up by &str first so repeated stacks do not allocate.
        match merged.get_mut(line.as_str()) {
            Some(count) => *count = count.saturating_add(profile.value(sample)),
            None => {
                merged.insert(line.clone(), profile.value(sample));
            }
        }
    }
    Ok(merged.into_iter().filter(|&(_, count)| count > 0).collect())
}

/// Appends `name` with the folded format's separators replaced; empty names become `[unknown]`.
fn push_sanitized(line: &mut String, name: &str) {
    if name.trim().is_empty() {
        line.push_str("[unknown]");
        return;
    }
    line.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::profile::Frame;

    fn folded(profile: &Profile) -> String {
        let mut out = Vec::new();
        render(profile, &mut out).expect("render");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn exact_output() {
        let inl = Frame {
            inlined: true,
            file: Some("src/lib.rs".to_string()),
            line: Some(7),
            ..user("Vec<T>::push")
        };
        let frames = vec![
            user("main"),               // 0
            user("work"),               // 1
            inl,                        // 2
            kernel("do_syscall_64"),    // 3
            kernel("entry_SYSCALL_64"), // 4
            user("__libc_write"),       // 5
            user("[u8; 8]::fmt"),       // 6
            user("bad\nname"),          // 7
        ];
        let samples = vec![
            // leaf first
            sample(10, 10, "app", &[2, 1, 0], 3),
            sample(10, 11, "app", &[2, 1, 0], 4), // other thread, same stack: merged
            sample(20, 20, "other", &[2, 1, 0], 1), // other comm: separate line
            sample(10, 10, "app", &[3, 4, 5, 1, 0], 5),
            sample(10, 10, "app", &[6, 7, 0], 2),
            sample(10, 10, "app", &[], 1),
            sample(10, 10, "app", &[1, 0], 0), // zero count: left out
        ];
        let p = profile(frames, samples);
        assert_eq!(
            folded(&p),
            "app 1\n\
             app;main;bad name;[u8: 8]::fmt 2\n\
             app;main;work;Vec<T>::push 7\n\
             app;main;work;__libc_write;entry_SYSCALL_64_[k];do_syscall_64_[k] 5\n\
             other;main;work;Vec<T>::push 1\n"
        );
    }

    #[test]
    fn empty_profile_is_empty_output() {
        assert_eq!(folded(&profile(vec![], vec![])), "");
    }

    #[test]
    fn comm_is_sanitized() {
        let p = profile(
            vec![user("f")],
            vec![sample(1, 1, "a;b", &[0], 1), sample(2, 2, " ", &[0], 1)],
        );
        assert_eq!(folded(&p), "[unknown];f 1\na:b;f 1\n");
    }
}

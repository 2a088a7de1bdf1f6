//! Text table of the functions with the most samples, like `go tool pprof -top`:
//!
//! ```text
//! loupe: cpu profile of pid 42, 2s 500ms: 12 samples at 100 Hz
//! Showing top 3 of 5 functions, accounting for 10 of 12 samples (83.33%)
//!       flat   flat%    sum%        cum    cum%  module     function
//!          5  41.67%  41.67%          9  75.00%  app        parse
//! ```
//!
//! - `flat`: samples with the function as the leaf (self samples).
//! - `cum`: samples with the function anywhere on the stack, counted once per stack even when
//!   it recurses.
//! - `sum%`: running total of `flat%` down the table.
//!
//! A function is a (name, module) pair. Inline frames are functions of their own, as in pprof.
//! Rows are sorted by flat, then cum, then name.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::profile::Profile;

use super::RenderError;

/// One function's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row<'a> {
    pub function: &'a str,
    pub module: &'a str,
    pub flat: u64,
    pub cum: u64,
}

/// Every function with its flat and cum samples, sorted as the table shows them.
pub fn rows(profile: &Profile) -> Result<Vec<Row<'_>>, RenderError> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    let mut seen: HashSet<usize> = HashSet::new();
    for sample in profile.samples.iter().filter(|s| profile.value(s) > 0) {
        seen.clear();
        for (depth, &id) in sample.stack.iter().enumerate() {
            let frame = super::frame(profile, id)?;
            let key = (frame.function.as_str(), frame.module.as_str());
            let i = *index.entry(key).or_insert_with(|| {
                rows.push(Row {
                    function: key.0,
                    module: key.1,
                    flat: 0,
                    cum: 0,
                });
                rows.len() - 1
            });
            let row = &mut rows[i];
            if depth == 0 {
                row.flat = row.flat.saturating_add(profile.value(sample));
            }
            if seen.insert(i) {
                row.cum = row.cum.saturating_add(profile.value(sample));
            }
        }
    }
    rows.sort_by(|a, b| {
        (b.flat, b.cum)
            .cmp(&(a.flat, a.cum))
            .then_with(|| (a.function, a.module).cmp(&(b.function, b.module)))
    });
    Ok(rows)
}

/// Writes the table of the `limit` functions with the most flat samples.
pub fn render(profile: &Profile, limit: usize, out: &mut dyn Write) -> Result<(), RenderError> {
    let all = rows(profile)?;
    let shown = &all[..limit.min(all.len())];
    let total = profile.total();
    let percent = |n: u64| {
        if total == 0 {
            0.0
        } else {
            n as f64 * 100.0 / total as f64
        }
    };

    writeln!(
        out,
        "loupe: {} profile of {}, {}: {}",
        profile.profile_type.name(),
        profile.target,
        super::human_duration(profile.duration),
        profile.describe_total()
    )?;
    let dropped: Vec<String> = profile
        .drops
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|(name, count)| format!("{name}={count}"))
        .collect();
    if !dropped.is_empty() {
        writeln!(out, "Dropped: {}", dropped.join(", "))?;
    }
    let shown_flat: u64 = shown.iter().map(|r| r.flat).sum();
    writeln!(
        out,
        "Showing top {} of {} functions, accounting for {} of {} {} ({:.2}%)",
        shown.len(),
        all.len(),
        shown_flat,
        total,
        super::unit_word(profile),
        percent(shown_flat)
    )?;

    let module_width = shown
        .iter()
        .map(|r| r.module.chars().count())
        .chain(["module".len()])
        .max()
        .unwrap_or(0);
    writeln!(
        out,
        "{:>10} {:>7} {:>7} {:>10} {:>7}  {:<module_width$}  function",
        "flat", "flat%", "sum%", "cum", "cum%", "module"
    )?;
    let mut sum = 0;
    for row in shown {
        sum += row.flat;
        writeln!(
            out,
            "{:>10} {:>6.2}% {:>6.2}% {:>10} {:>6.2}%  {:<module_width$}  {}",
            row.flat,
            percent(row.flat),
            percent(sum),
            row.cum,
            percent(row.cum),
            row.module,
            row.function
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::profile::Frame;

    /// main -> a -> b -> a -> leaf (recursion through `a`), plus an inline frame and a kernel
    /// frame.
    fn recursive_profile() -> Profile {
        let frames = vec![
            user("main"), // 0
            user("a"),    // 1
            user("b"),    // 2
            user("leaf"), // 3
            Frame {
                inlined: true,
                ..user("inl")
            }, // 4
            kernel("do_syscall_64"), // 5
            frame("a", "libother.so", crate::profile::FrameKind::User), // 6: same name, other module
        ];
        let samples = vec![
            sample(1, 1, "app", &[3, 1, 2, 1, 0], 5), // leaf <- a <- b <- a <- main
            sample(1, 2, "app", &[1, 2, 1, 0], 3),    // a (self) <- b <- a <- main
            sample(1, 1, "app", &[4, 2, 0], 2),       // inl (inlined into b) <- b <- main
            sample(1, 1, "app", &[5, 1, 0], 1),       // kernel <- a <- main
            sample(1, 1, "app", &[6, 0], 1),          // other a <- main
            sample(1, 1, "app", &[], 1),              // no stack: only in the total
            sample(1, 1, "app", &[0], 0),             // zero count: ignored
        ];
        profile(frames, samples)
    }

    fn row<'a>(function: &'a str, module: &'a str, flat: u64, cum: u64) -> Row<'a> {
        Row {
            function,
            module,
            flat,
            cum,
        }
    }

    #[test]
    fn flat_and_cum_with_recursion() {
        let p = recursive_profile();
        assert_eq!(
            rows(&p).expect("rows"),
            [
                row("leaf", "app", 5, 5),
                row("a", "app", 3, 9), // once per stack despite recursing
                row("inl", "app", 2, 2),
                row("a", "libother.so", 1, 1),
                row("do_syscall_64", "[kernel]", 1, 1),
                row("main", "app", 0, 12),
                row("b", "app", 0, 10),
            ]
        );
    }

    #[test]
    fn table() {
        let mut out = Vec::new();
        render(&recursive_profile(), 3, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        let want = "\
loupe: cpu profile of pid 42, 2s 500ms: 13 samples at 100 Hz
Dropped: drop_stack_missing=3
Showing top 3 of 7 functions, accounting for 10 of 13 samples (76.92%)
      flat   flat%    sum%        cum    cum%  module  function
         5  38.46%  38.46%          5  38.46%  app     leaf
         3  23.08%  61.54%          9  69.23%  app     a
         2  15.38%  76.92%          2  15.38%  app     inl
";
        assert_eq!(text, want);
    }

    #[test]
    fn module_column_widens() {
        let mut out = Vec::new();
        super::super::render_top(&recursive_profile(), 20, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("Showing top 7 of 7 functions"), "{text}");
        assert!(
            text.contains("         0   0.00%  92.31%         12  92.31%  app          main\n"),
            "{text}"
        );
        assert!(text.contains("  [kernel]     do_syscall_64\n"), "{text}");
    }

    #[test]
    fn empty_profile() {
        let mut out = Vec::new();
        render(&profile(vec![], vec![]), 20, &mut out).expect("render");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.contains("0 samples at 100 Hz"), "{text}");
        assert!(
            text.contains("Showing top 0 of 0 functions, accounting for 0 of 0 samples (0.00%)")
        );
    }
}

//! `--top N` sets the rows of the top-functions table, on stdout and in a file alike.

mod common;

use std::process::Command;

use common::*;

/// (shown, of all) from the table's "Showing top N of M functions" line, and its data rows.
fn table(text: &str) -> (usize, usize, usize) {
    let line = text
        .lines()
        .find(|l| l.starts_with("Showing top "))
        .unwrap_or_else(|| panic!("no summary line in:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let shown = words[2].parse().expect("shown rows");
    let all = words[4].parse().expect("function count");
    let header = text
        .lines()
        .position(|l| l.trim_start().starts_with("flat"))
        .unwrap_or_else(|| panic!("no table header in:\n{text}"));
    let rows = text
        .lines()
        .skip(header + 1)
        .filter(|l| !l.is_empty())
        .count();
    (shown, all, rows)
}

#[test]
fn top_rows_apply_to_files_and_stdout() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    let split = fixture("c/split");
    for rows in [2usize, 3] {
        let file = dir.path().join(format!("top{rows}.txt"));
        let output = Command::new(loupe_bin())
            .args(["profile", "-f", "top", "--top", &rows.to_string(), "-o"])
            .arg(&file)
            .arg("--")
            .arg(&split)
            .arg("0.5")
            .output()
            .expect("run loupe");
        assert!(output.status.success(), "loupe failed");
        let text = std::fs::read_to_string(&file).expect("read the table");
        let (shown, all, printed) = table(&text);
        assert!(
            all > rows,
            "too few functions ({all}) to test --top {rows}:\n{text}"
        );
        assert_eq!(
            (shown, printed),
            (rows, rows),
            "--top {rows} in a file:\n{text}"
        );

        let output = Command::new(loupe_bin())
            .args(["profile", "--top", &rows.to_string(), "--"])
            .arg(&split)
            .arg("0.5")
            .output()
            .expect("run loupe");
        assert!(output.status.success(), "loupe failed");
        let text = String::from_utf8_lossy(&output.stdout);
        let (shown, _, printed) = table(&text);
        assert_eq!(
            (shown, printed),
            (rows, rows),
            "--top {rows} on stdout:\n{text}"
        );
    }
}

//! A stored window's per-process figures, packed: one fixed-size row per process, in pid
//! order, and one byte buffer holding all their run-queue histograms as varints. A window on a
//! host that starts processes by the hundred sees most of them for a few milliseconds; a
//! hash-map entry and a histogram allocation each cost about 300 bytes a process, a row and
//! its encoded histogram about 60.

use std::sync::Arc;

use crate::histogram::LatencyHistogram;

use super::{attribution::ProcessInfo, store::ProcessFigures};

/// `Row::histogram_at` of a process with no run-queue waits.
const NO_HISTOGRAM: usize = usize::MAX;
/// `Row::offcpu_ns` when the scheduling collector was disabled.
const NO_OFFCPU: u64 = u64::MAX;

#[derive(Debug)]
struct Row {
    pid: u32,
    exited: bool,
    cpu_samples: u64,
    offcpu_ns: u64,
    /// Where its histogram starts in `ProcessTable::histograms`.
    histogram_at: usize,
    info: Arc<ProcessInfo>,
}

#[derive(Debug, Default)]
pub struct ProcessTable {
    rows: Box<[Row]>,
    histograms: Box<[u8]>,
}

/// One process's figures in a stored window.
#[derive(Clone, Copy, Debug)]
pub struct ProcessRow<'a> {
    pub pid: u32,
    pub info: &'a Arc<ProcessInfo>,
    pub cpu_samples: u64,
    /// Exact, from the scheduling collector (`None`: it is disabled).
    pub offcpu_ns: Option<u64>,
    pub exited: bool,
    histogram: Option<&'a [u8]>,
}

impl ProcessRow<'_> {
    /// Its run-queue latency histogram (empty when it never waited).
    pub fn runqueue(&self) -> LatencyHistogram {
        self.histogram
            .and_then(|mut bytes| LatencyHistogram::decode(&mut bytes))
            .unwrap_or_default()
    }
}

impl ProcessTable {
    pub fn pack(processes: impl IntoIterator<Item = (u32, ProcessFigures)>) -> ProcessTable {
        let mut histograms = Vec::new();
        let mut rows: Vec<Row> = processes
            .into_iter()
            .map(|(pid, p)| {
                let histogram_at = if p.runqueue.count == 0 {
                    NO_HISTOGRAM
                } else {
                    let at = histograms.len();
                    p.runqueue.encode(&mut histograms);
                    at
                };
                Row {
                    pid,
                    exited: p.exited,
                    cpu_samples: p.cpu_samples,
                    // An exact total of u64::MAX ns (584 years) cannot occur in a window.
                    offcpu_ns: p.offcpu_ns.map_or(NO_OFFCPU, |ns| ns.min(NO_OFFCPU - 1)),
                    histogram_at,
                    info: p.info,
                }
            })
            .collect();
        rows.sort_unstable_by_key(|r| r.pid);
        ProcessTable {
            rows: rows.into_boxed_slice(),
            histograms: histograms.into_boxed_slice(),
        }
    }

    fn row<'a>(&'a self, row: &'a Row) -> ProcessRow<'a> {
        ProcessRow {
            pid: row.pid,
            info: &row.info,
            cpu_samples: row.cpu_samples,
            offcpu_ns: (row.offcpu_ns != NO_OFFCPU).then_some(row.offcpu_ns),
            exited: row.exited,
            histogram: self.histograms.get(row.histogram_at..),
        }
    }

    /// Every process, by pid.
    pub fn iter(&self) -> impl Iterator<Item = ProcessRow<'_>> {
        self.rows.iter().map(|r| self.row(r))
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Heap bytes of the rows and histograms (the attributions they point to are counted
    /// by the store, as windows share them).
    pub fn heap_bytes(&self) -> usize {
        // An allocation's header costs about 16 bytes.
        let allocation = |bytes: usize| if bytes == 0 { 0 } else { bytes + 16 };
        allocation(size_of_val(&*self.rows)) + allocation(self.histograms.len())
    }

    /// The attributions the rows point to.
    pub fn infos(&self) -> impl Iterator<Item = &Arc<ProcessInfo>> {
        self.rows.iter().map(|r| &r.info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(comm: &str, cpu: u64, offcpu: Option<u64>, waits: &[u64]) -> ProcessFigures {
        let mut runqueue = LatencyHistogram::default();
        for &ns in waits {
            runqueue.record(ns);
        }
        ProcessFigures {
            info: Arc::new(ProcessInfo {
                comm: comm.into(),
                ..Default::default()
            }),
            cpu_samples: cpu,
            offcpu_ns: offcpu,
            runqueue,
            exited: cpu == 0,
        }
    }

    #[test]
    fn packed_rows_read_back_as_given() {
        let given = vec![
            (30, figures("c", 0, Some(5), &[])),
            (10, figures("a", 7, Some(0), &[1_500, 3_000_000, 1_600])),
            (20, figures("b", 1, None, &[90])),
        ];
        let table = ProcessTable::pack(given.clone());
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.iter().map(|p| p.pid).collect::<Vec<_>>(),
            [10, 20, 30]
        );
        for (pid, f) in &given {
            let p = table.iter().find(|p| p.pid == *pid).expect("packed pid");
            assert_eq!(p.info.comm, f.info.comm);
            assert_eq!(p.cpu_samples, f.cpu_samples);
            assert_eq!(p.offcpu_ns, f.offcpu_ns);
            assert_eq!(p.exited, f.exited);
            assert_eq!(p.runqueue(), f.runqueue);
        }
        // Rows and histograms are all the table holds: well under the 300 bytes a process
        // that a map of `ProcessFigures` cost.
        assert!(table.heap_bytes() < 3 * 80, "{}", table.heap_bytes());
    }
}

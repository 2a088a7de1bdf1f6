//! Flame-graph trees of the API (web/API.md, `flamegraph` and `flamegraph/diff`): the root
//! `all`, one node per process name, then the stack root first; `max_nodes` trimming.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use crate::profile::{FrameKind, Profile};

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    name: String,
    kind: Option<&'static str>,
    module: Option<String>,
}

struct Node {
    key: Key,
    /// Range b (or the only range).
    value: u64,
    /// Range a of a diff.
    a_value: u64,
    children: HashMap<Key, usize>,
}

/// A call tree under construction; the root is node 0.
pub struct Tree {
    nodes: Vec<Node>,
}

/// Which of a diff's two ranges a profile belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

impl Default for Tree {
    fn default() -> Self {
        Tree {
            nodes: vec![Node {
                key: Key {
                    name: "all".into(),
                    kind: None,
                    module: None,
                },
                value: 0,
                a_value: 0,
                children: HashMap::new(),
            }],
        }
    }
}

impl Tree {
    /// Adds every sample of `profile` whose pid `keep` accepts.
    pub fn add(&mut self, profile: &Profile, side: Side, keep: &dyn Fn(u32) -> bool) {
        for sample in &profile.samples {
            let value = profile.value(sample);
            if value == 0 || !keep(sample.pid) {
                continue;
            }
            let process = Key {
                name: sample.comm.clone(),
                kind: Some("process"),
                module: None,
            };
            let frames = sample.stack.iter().rev().filter_map(|&id| {
                let f = profile.frames.get(id as usize)?;
                let kind = match (f.kind, f.inlined) {
                    (FrameKind::Kernel, _) => Some("kernel"),
                    (_, true) => Some("inlined"),
                    _ => None,
                };
                Some(Key {
                    name: f
                        .function
                        .strip_suffix("_[k]")
                        .unwrap_or(&f.function)
                        .to_string(),
                    kind,
                    module: (!f.module.is_empty()).then(|| f.module.clone()),
                })
            });
            let mut at = 0;
            self.bump(at, side, value);
            for key in std::iter::once(process).chain(frames) {
                at = self.child(at, key);
                self.bump(at, side, value);
            }
        }
    }

    fn bump(&mut self, node: usize, side: Side, value: u64) {
        let n = &mut self.nodes[node];
        match side {
            Side::A => n.a_value = n.a_value.saturating_add(value),
            Side::B => n.value = n.value.saturating_add(value),
        }
    }

    fn child(&mut self, parent: usize, key: Key) -> usize {
        if let Some(&i) = self.nodes[parent].children.get(&key) {
            return i;
        }
        let i = self.nodes.len();
        self.nodes.push(Node {
            key: key.clone(),
            value: 0,
            a_value: 0,
            children: HashMap::new(),
        });
        self.nodes[parent].children.insert(key, i);
        i
    }

    pub fn total(&self, side: Side) -> u64 {
        match side {
            Side::A => self.nodes[0].a_value,
            Side::B => self.nodes[0].value,
        }
    }

    /// The nodes kept under `max_nodes`: the largest by rank (`value`, or the larger of
    /// both values in a diff), ties shallower first, then earlier in depth-first order of
    /// the name-sorted tree. Ancestors of kept nodes are always kept (their rank is no less).
    fn kept(&self, max_nodes: Option<usize>, diff: bool) -> (HashSet<usize>, usize) {
        let rank = |n: &Node| {
            if diff {
                n.value.max(n.a_value)
            } else {
                n.value
            }
        };
        let mut order = Vec::with_capacity(self.nodes.len());
        let mut stack = vec![(0usize, 0usize)];
        while let Some((i, depth)) = stack.pop() {
            order.push((i, depth));
            let mut children: Vec<(&Key, &usize)> = self.nodes[i].children.iter().collect();
            children.sort();
            for (_, &c) in children.into_iter().rev() {
                stack.push((c, depth + 1));
            }
        }
        let all = order.len();
        let Some(max) = max_nodes.filter(|&m| m < all) else {
            return (order.into_iter().map(|(i, _)| i).collect(), 0);
        };
        let mut ranked: Vec<(usize, usize, usize)> = order
            .iter()
            .enumerate()
            .map(|(dfs, &(i, depth))| (i, depth, dfs))
            .collect();
        ranked.sort_by(|a, b| {
            rank(&self.nodes[b.0])
                .cmp(&rank(&self.nodes[a.0]))
                .then(a.1.cmp(&b.1))
                .then(a.2.cmp(&b.2))
        });
        let kept: HashSet<usize> = ranked.into_iter().take(max).map(|(i, _, _)| i).collect();
        (kept, all - max)
    }

    /// The JSON root node and how many nodes `max_nodes` removed. With `diff`, nodes carry
    /// `a_value` and `delta`.
    pub fn to_json(&self, max_nodes: Option<usize>, diff: bool) -> (Value, usize) {
        let (kept, trimmed) = self.kept(max_nodes, diff);
        let totals = (self.total(Side::A), self.total(Side::B));
        (self.node_json(0, &kept, diff, totals), trimmed)
    }

    fn node_json(&self, i: usize, kept: &HashSet<usize>, diff: bool, totals: (u64, u64)) -> Value {
        let n = &self.nodes[i];
        let mut out = Map::new();
        out.insert("name".into(), json!(n.key.name));
        if let Some(kind) = n.key.kind {
            out.insert("kind".into(), json!(kind));
        }
        if let Some(module) = &n.key.module {
            out.insert("module".into(), json!(module));
        }
        out.insert("value".into(), json!(n.value));
        if diff {
            let share = |v: u64, total: u64| {
                if total == 0 {
                    0.0
                } else {
                    v as f64 / total as f64
                }
            };
            out.insert("a_value".into(), json!(n.a_value));
            let delta = share(n.value, totals.1) - share(n.a_value, totals.0);
            out.insert("delta".into(), json!((delta * 1e4).round() / 1e4));
        }
        let mut children: Vec<(&Key, usize)> = n
            .children
            .iter()
            .filter(|(_, c)| kept.contains(c))
            .filter(|(_, &c)| self.nodes[c].value > 0 || diff)
            .map(|(k, &c)| (k, c))
            .collect();
        children.sort();
        if !children.is_empty() {
            let list: Vec<Value> = children
                .into_iter()
                .map(|(_, c)| self.node_json(c, kept, diff, totals))
                .collect();
            out.insert("children".into(), Value::Array(list));
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::testutil::{kernel, profile, sample, user};

    fn tree() -> Tree {
        // Stacks leaf first: main -> a (3), main -> b (1), main -> syscall[k] (2); pid 2: other.
        let p = profile(
            vec![user("a"), user("b"), user("main"), kernel("do_syscall_64")],
            vec![
                sample(1, 1, "app", &[0, 2], 3),
                sample(1, 2, "app", &[1, 2], 1),
                sample(1, 1, "app", &[3, 2], 2),
                sample(2, 2, "other", &[2], 4),
            ],
        );
        let mut t = Tree::default();
        t.add(&p, Side::B, &|_| true);
        t
    }

    #[test]
    fn the_tree_has_the_api_shape() {
        let (root, trimmed) = tree().to_json(None, false);
        assert_eq!(trimmed, 0);
        assert_eq!(root["name"], "all");
        assert_eq!(root["value"], 10);
        let app = &root["children"][0];
        assert_eq!(
            (app["name"].as_str(), app["kind"].as_str()),
            (Some("app"), Some("process"))
        );
        assert_eq!(app["value"], 6);
        let main = &app["children"][0];
        assert_eq!(
            (main["name"].as_str(), main["module"].as_str()),
            (Some("main"), Some("app"))
        );
        let names: Vec<&str> = main["children"]
            .as_array()
            .expect("children")
            .iter()
            .map(|c| c["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["a", "b", "do_syscall_64"]);
        assert_eq!(main["children"][2]["kind"], "kernel");
        assert!(main["children"][0].get("children").is_none());
    }

    #[test]
    fn max_nodes_keeps_the_largest_and_their_ancestors() {
        // Nodes: all 10, app 6, other 4, main(app) 6, main(other) 4, a 3, syscall 2, b 1.
        let (root, trimmed) = tree().to_json(Some(5), false);
        assert_eq!(trimmed, 3);
        let app = &root["children"][0];
        let main = &app["children"][0];
        // `a` (3) is ranked below main(other) (4): trimmed, its value stays in main's.
        assert!(main.get("children").is_none(), "{root}");
        assert_eq!(main["value"], 6);
        assert_eq!(root["children"][1]["children"][0]["value"], 4);
    }

    #[test]
    fn pids_filter_and_diffs_carry_both_values() {
        let p = profile(
            vec![user("a"), user("main")],
            vec![sample(1, 1, "app", &[0, 1], 1), sample(9, 9, "x", &[1], 5)],
        );
        let q = profile(
            vec![user("main"), user("a")],
            vec![
                sample(1, 1, "app", &[1, 0], 3),
                sample(1, 1, "app", &[0], 1),
            ],
        );
        let mut t = Tree::default();
        t.add(&p, Side::A, &|pid| pid == 1);
        t.add(&q, Side::B, &|pid| pid == 1);
        assert_eq!((t.total(Side::A), t.total(Side::B)), (1, 4));
        let (root, _) = t.to_json(None, true);
        let a = &root["children"][0]["children"][0]["children"][0];
        assert_eq!(
            (
                a["name"].as_str(),
                a["value"].as_u64(),
                a["a_value"].as_u64()
            ),
            (Some("a"), Some(3), Some(1))
        );
        // 3/4 - 1/1
        assert_eq!(a["delta"], -0.25);
    }
}

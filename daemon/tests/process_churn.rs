//! Many short-lived processes: samples taken while a process exits or execs (when it has no
//! user address space) are kernel-only samples, not losses; real losses stay counted. More
//! processes than the target map holds (16384) come and go: exited ones leave it, so it never
//! fills.

mod common;

use common::*;

#[test]
fn short_lived_processes_lose_no_user_stacks() {
    assert_root();
    let _serial = serial();
    let dir = temp_dir();
    let out = dir.path().join("churn.json");
    loupe(&[
        "profile",
        "-F",
        "499",
        "-d",
        "120s",
        "-o",
        out.to_str().expect("utf-8"),
        "--",
        "bash",
        "-c",
        "for i in $(seq 18000); do /bin/true; done",
    ]);
    let (profile, stacks) = read_json(&out);
    let samples: u64 = stacks.iter().map(|(_, s)| s.count).sum();
    assert!(samples >= 200, "only {samples} samples");
    let drops = profile["drops"].as_object().expect("drops");
    for (name, count) in drops {
        let count = count.as_u64().expect("drop count");
        assert!(
            count * 100 <= samples * 2,
            "{name}={count} of {samples} samples (over 2%); all drops: {drops:?}"
        );
    }
}

//! `loupe check`: the kernel features loupe uses, and what each missing one disables.
//! Exit status 0 iff CPU profiling can run.

use std::{path::Path, process::ExitCode};

use aya::programs::Program;

use crate::{
    bpf,
    engine::{self, Feature, FeatureKind},
};

#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found, or why it failed and how to fix it.
    pub detail: String,
    /// What loupe cannot do without it (empty: nothing).
    pub disables: &'static str,
    /// Whether CPU profiling needs it.
    pub required_for_cpu: bool,
}

const CPU: &str = "CPU profiling (loupe profile)";

pub fn run(json: bool) -> anyhow::Result<ExitCode> {
    let checks = collect();
    let cpu_ok = checks.iter().filter(|c| c.required_for_cpu).all(|c| c.ok);
    let mut text = String::new();
    if json {
        let report = serde_json::json!({ "cpu_profiling": cpu_ok, "checks": checks });
        text = serde_json::to_string_pretty(&report)? + "\n";
    } else {
        for c in &checks {
            let mark = if c.ok {
                "ok  "
            } else if c.required_for_cpu {
                "FAIL"
            } else {
                "no  "
            };
            text += &format!("{mark} {:<34} {}\n", c.name, c.detail);
            if !c.ok && !c.disables.is_empty() {
                text += &format!("     {:<34} disables: {}\n", "", c.disables);
            }
        }
        text += &format!(
            "\nCPU profiling: {}\n",
            if cpu_ok {
                "available"
            } else {
                "NOT available (see FAIL above)"
            }
        );
    }
    crate::cli::write_stdout(|out| out.write_all(text.as_bytes()))?;
    Ok(if cpu_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn collect() -> Vec<Check> {
    let mut checks = vec![privileges(), btf(), tracefs()];
    let btf_ok = checks[1].ok;
    let tracefs_ok = checks[2].ok;
    checks.push(bpf_programs(checks[0].ok && tracefs_ok));
    // Each capability's kernel features, from the capability itself.
    for (capability, features) in engine::features() {
        for feature in features {
            checks.push(feature_check(capability, feature, btf_ok, tracefs_ok));
        }
    }
    checks.push(kprobes());
    checks
}

/// Capabilities CPU profiling cannot run without.
fn required_for_cpu(capability: &str) -> bool {
    matches!(capability, "targets" | "cpu")
}

fn feature_check(
    capability: &'static str,
    feature: &Feature,
    btf_ok: bool,
    tracefs_ok: bool,
) -> Check {
    let required_for_cpu = required_for_cpu(capability);
    match feature.kind {
        FeatureKind::Tracepoint { category, name } => {
            let mut check = tracepoint(category, name, feature.used_for, tracefs_ok);
            check.required_for_cpu = required_for_cpu;
            check
        }
        FeatureKind::BtfTracepoint { name } => {
            let mut check = tracepoint("sched", name, feature.used_for, tracefs_ok);
            if !btf_ok {
                check.ok = false;
                check.detail = format!("tp_btf/{name} needs kernel BTF");
            } else if check.ok {
                check.detail = format!("BTF tracepoint {name} ({})", feature.used_for);
            }
            check.required_for_cpu = required_for_cpu;
            check
        }
        FeatureKind::PerfCpuClock => perf_cpu_clock(),
        FeatureKind::Uprobes => pmu("uprobes", "uprobe", feature.used_for, required_for_cpu),
    }
}

fn privileges() -> Check {
    let missing = bpf::missing_capabilities();
    let ok = missing.is_empty();
    let naming = bpf::missing_naming_capabilities();
    let detail = if !ok {
        format!("missing {}: run loupe with sudo", missing.join(", "))
    } else if naming.is_empty() {
        "root or CAP_BPF + CAP_PERFMON + CAP_SYS_ADMIN (+ CAP_DAC_READ_SEARCH for a root-only tracefs)".into()
    } else {
        let lost: Vec<String> = naming
            .iter()
            .map(|(name, lost)| format!("without {name}, {lost}"))
            .collect();
        format!("enough to profile; {}", lost.join("; "))
    };
    Check {
        name: "root / capabilities",
        ok,
        detail,
        disables: "everything (the kernel refuses BPF programs)",
        required_for_cpu: true,
    }
}

fn btf() -> Check {
    let ok = Path::new("/sys/kernel/btf/vmlinux").exists();
    Check {
        name: "kernel BTF",
        ok,
        detail: if ok {
            "/sys/kernel/btf/vmlinux".into()
        } else {
            "no /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF)".into()
        },
        disables: "BTF tracepoints used by scheduling and lock profiles (later capabilities)",
        required_for_cpu: false,
    }
}

fn tracefs() -> Check {
    let was_mounted = Path::new(bpf::TRACEFS).join("events").is_dir();
    let result = if bpf::is_privileged() || was_mounted {
        bpf::ensure_tracefs().map(|_| ())
    } else {
        Err(bpf::BpfError::NotPrivileged(bpf::missing_capabilities()))
    };
    Check {
        name: "tracefs",
        ok: result.is_ok(),
        detail: match result {
            Ok(()) if was_mounted => format!("mounted at {}", bpf::TRACEFS),
            Ok(()) => format!("was not mounted; mounted it at {}", bpf::TRACEFS),
            Err(e) => e.to_string(),
        },
        disables: "all tracepoints: following commands' children, exec/exit tracking",
        required_for_cpu: true,
    }
}

/// Loads (without attaching) every program loupe uses: proves the BPF syscall works and
/// the verifier accepts them on this kernel.
fn bpf_programs(can_try: bool) -> Check {
    let name = "BPF syscall + loupe's programs";
    if !can_try {
        return Check {
            name,
            ok: false,
            detail: "not tried (needs root and tracefs)".into(),
            disables: CPU,
            required_for_cpu: true,
        };
    }
    let result = (|| -> Result<usize, String> {
        let mut ebpf = bpf::load().map_err(|e| e.to_string())?;
        let btf = aya::Btf::from_sys_fs().ok();
        let mut loaded = 0;
        for (name, program) in ebpf.programs_mut() {
            let result = match program {
                Program::PerfEvent(p) => p.load(),
                Program::TracePoint(p) => p.load(),
                Program::UProbe(p) => p.load(),
                Program::BtfTracePoint(p) => match &btf {
                    Some(btf) => p.load(name, btf),
                    None => return Err(format!("{name}: needs kernel BTF")),
                },
                _ => return Err(format!("{name}: a program type loupe does not load")),
            };
            result.map_err(|e| format!("{name}: {e}"))?;
            loaded += 1;
        }
        Ok(loaded)
    })();
    match result {
        Ok(n) => Check {
            name,
            ok: true,
            detail: format!("{n} programs verified and loaded"),
            disables: CPU,
            required_for_cpu: true,
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: e,
            disables: CPU,
            required_for_cpu: true,
        },
    }
}

/// Opens (and closes) a software cpu-clock counter on CPU 0 for all processes.
/// From linux/perf_event.h.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

fn perf_cpu_clock() -> Check {
    // struct perf_event_attr, zeroed: type PERF_TYPE_SOFTWARE (1), config CPU_CLOCK (0).
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes());
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes());
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1i32,
            0i32,
            -1i32,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    let ok = fd >= 0;
    let detail = if ok {
        unsafe { libc::close(fd as i32) };
        "software cpu-clock event opens".to_string()
    } else {
        let e = std::io::Error::last_os_error();
        format!("perf_event_open(cpu-clock) failed: {e} (needs CAP_PERFMON; kernel.perf_event_paranoid)")
    };
    Check {
        name: "perf events (cpu-clock)",
        ok,
        detail,
        disables: CPU,
        required_for_cpu: true,
    }
}

fn pmu(name: &'static str, pmu: &str, disables: &'static str, required_for_cpu: bool) -> Check {
    let path = format!("/sys/bus/event_source/devices/{pmu}");
    let ok = Path::new(&path).exists();
    Check {
        name,
        ok,
        detail: if ok {
            format!("{path} present")
        } else {
            format!("no {path} (kernel built without it)")
        },
        disables,
        required_for_cpu,
    }
}

fn tracepoint(
    category: &str,
    name: &'static str,
    used_for: &'static str,
    tracefs_ok: bool,
) -> Check {
    let path = Path::new(bpf::TRACEFS)
        .join("events")
        .join(category)
        .join(name);
    let ok = tracefs_ok && path.is_dir();
    Check {
        name,
        ok,
        detail: if ok {
            format!("tracepoint {category}:{name} ({used_for})")
        } else if tracefs_ok {
            format!("no tracepoint {category}:{name}")
        } else {
            "tracefs unavailable".into()
        },
        disables: used_for,
        required_for_cpu: true,
    }
}

fn kprobes() -> Check {
    let present = Path::new("/sys/bus/event_source/devices/kprobe").exists();
    Check {
        name: "kprobes (not required)",
        ok: true,
        detail: if present {
            "present; loupe uses none".into()
        } else {
            "absent (CONFIG_KPROBES off); loupe needs none".into()
        },
        disables: "",
        required_for_cpu: false,
    }
}

#!/usr/bin/env python3
"""A stand-in for `loupe daemon`'s HTTP side: serves web/ and every endpoint of web/API.md with
made-up but realistic data (1,000 processes, deep Go/C/Java/Python stacks, kernel frames), so the UI
can be developed and tested without root or BPF. It validates parameters as API.md says (400 with a
message naming the parameter), so a UI that asks wrongly fails here too.

    python3 web/test/mock_server.py [--port 7471] [--processes 1000]
"""

import argparse
import hashlib
import json
import math
import random
import re
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

WEB_DIR = Path(__file__).resolve().parent.parent
STARTED = time.time() - 50 * 60  # "daemon" started 50 min ago: a 1h range is only partly covered
WINDOW_S = 10
RETENTION_S = 3600
CPU_HZ = 99
PERIOD_NS = round(1e9 / CPU_HZ)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


class BadRequest(Exception):
    pass


class Refused(Exception):
    """An answer with another status than 400 (404, 422), with its one-line reason."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- parameters (as API.md says)

DUR_RE = re.compile(r"(\d+)(ms|s|m|h)")
DUR_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_duration(text, param):
    pos, total = 0, 0.0
    for m in DUR_RE.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * DUR_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise BadRequest(f'bad parameter {param}: "{text}" is not a duration like 500ms, 60s, 5m, 1h30m')
    return total


def parse_time(text, param, now):
    if text == "now":
        return now
    if text.startswith("now-"):
        return now - parse_duration(text[4:], param)
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            raise ValueError
        return dt.timestamp()
    except ValueError:
        raise BadRequest(f'bad parameter {param}: "{text}" is not RFC 3339, unix seconds or now-DURATION')


def rfc3339(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def covered(start, end, now):
    """The span of stored windows overlapping [start, end), clipped to what is stored."""
    if end <= start:
        raise BadRequest("bad range: from must be before to")
    oldest = max(STARTED, now - RETENTION_S)
    lo = max(start, oldest)
    hi = min(end, now)
    if hi <= lo:
        return end, end
    lo = math.floor(lo / WINDOW_S) * WINDOW_S
    hi = min(math.ceil(hi / WINDOW_S) * WINDOW_S, now)
    return max(lo, math.floor(oldest / WINDOW_S) * WINDOW_S), hi


# ---------------------------------------------------------------- a made-up host

GO_HTTP = ["runtime.goexit", "net/http.(*conn).serve", "net/http.serverHandler.ServeHTTP",
           "net/http.(*ServeMux).ServeHTTP", "net/http.HandlerFunc.ServeHTTP"]
SYSCALL_WRITE = ["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_write", "ksys_write",
                 "vfs_write", "sock_write_iter", "sock_sendmsg", "tcp_sendmsg", "tcp_sendmsg_locked",
                 "tcp_push", "__tcp_push_pending_frames", "tcp_write_xmit", "__tcp_transmit_skb",
                 "ip_queue_xmit", "__ip_queue_xmit", "ip_finish_output2", "__dev_queue_xmit"]
SYSCALL_EPOLL = ["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_epoll_wait",
                 "do_epoll_wait", "ep_poll", "schedule_hrtimeout_range", "schedule", "__schedule"]
SYSCALL_FUTEX = ["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_futex", "do_futex",
                 "futex_wait", "futex_wait_queue", "schedule", "__schedule"]
SYSCALL_READ_BLOCK = ["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_pread64",
                      "vfs_read", "ext4_file_read_iter", "filemap_read", "filemap_get_pages",
                      "folio_wait_bit_common", "io_schedule", "schedule", "__schedule"]
PG_BASE = ["_start", "__libc_start_main_impl", "__libc_start_call_main", "main", "PostmasterMain",
           "ServerLoop", "BackendStartup", "postmaster_child_launch", "BackendMain", "PostgresMain"]
NGX_BASE = ["_start", "__libc_start_main_impl", "__libc_start_call_main", "main",
            "ngx_master_process_cycle", "ngx_start_worker_processes", "ngx_spawn_process",
            "ngx_worker_process_cycle", "ngx_process_events_and_timers"]
JAVA_BASE = ["start_thread", "thread_native_entry", "JavaThread::run", "JavaThread::thread_main_inner",
             "JavaMain", "java.lang.Thread.run", "java.util.concurrent.ThreadPoolExecutor$Worker.run",
             "java.util.concurrent.ThreadPoolExecutor.runWorker"]
PY_BASE = ["_start", "__libc_start_main_impl", "Py_BytesMain", "Py_RunMain", "_PyRun_AnyFileObject",
           "_PyRun_SimpleFileObject", "run_mod", "run_eval_code_obj", "PyEval_EvalCode",
           "_PyEval_EvalFrameDefault"]
KTHREAD = ["ret_from_fork_asm", "ret_from_fork", "kthread"]


def k(frames):
    """Marks frames as kernel frames."""
    return [(f, "kernel", "[kernel]") for f in frames]


def u(frames, module):
    return [(f, None, module) for f in frames]


def deep_walk(depth):
    # A recursive tree walk: the "deep flame graph" case (a stack of depth 60+).
    return [("main.(*node).walk", None, "checkout-api")] * depth


# Each program: list of (weight per CPU-second, stack outermost first, growth tag).
def go_service(name):
    http = u(GO_HTTP, name)
    return {
        "cpu": [
            (30, http + u(["main.(*api).checkout", "main.(*api).priceCart", "encoding/json.Marshal",
                           "encoding/json.(*encodeState).marshal", "encoding/json.(*encodeState).reflectValue",
                           "encoding/json.structEncoder.encode", "encoding/json.stringEncoder"], name), None),
            (18, http + u(["main.(*api).checkout", "main.(*api).sign", "crypto/hmac.(*hmac).Write",
                           "crypto/sha256.(*digest).Write", "crypto/sha256.block"], name), None),
            (10, http + u(["main.(*api).checkout", "main.(*api).applyCoupons", "regexp.(*Regexp).MatchString",
                           "regexp.(*Regexp).doExecute", "regexp.(*Regexp).backtrack",
                           "regexp.(*Regexp).tryBacktrack"], name), "grow"),
            (8, http + u(["main.(*api).inventory"], name) + deep_walk(64) + u(["main.(*node).score"], name), None),
            (9, u(["runtime.gcBgMarkWorker", "runtime.systemstack", "runtime.gcBgMarkWorker.func2",
                   "runtime.gcDrain", "runtime.scanobject", "runtime.findObject"], name), None),
            (6, http + u(["main.(*api).checkout", "runtime.mallocgc", "runtime.(*mcache).nextFree",
                          "runtime.(*mcache).refill", "runtime.(*mcentral).cacheSpan"], name), None),
            (7, http + u(["bufio.(*Writer).Flush", "net.(*conn).Write", "net.(*netFD).Write",
                          "internal/poll.(*FD).Write", "syscall.Write", "syscall.Syscall",
                          "internal/runtime/syscall.Syscall6"], name) + k(SYSCALL_WRITE), None),
            (4, u(["runtime.mstart", "runtime.mstart0", "runtime.mstart1", "runtime.schedule",
                   "runtime.findRunnable", "runtime.netpoll"], name) + k(SYSCALL_EPOLL[:4]), None),
        ],
        "offcpu": [
            (50, u(["runtime.mstart", "runtime.mstart0", "runtime.mstart1", "runtime.schedule",
                    "runtime.findRunnable", "runtime.netpoll", "internal/runtime/syscall.EpollWait"], name)
             + k(SYSCALL_EPOLL), None),
            (30, u(["runtime.mstart", "runtime.mstart0", "runtime.mstart1", "runtime.schedule",
                    "runtime.findRunnable", "runtime.stopm", "runtime.mPark", "runtime.notesleep",
                    "runtime.futexsleep", "runtime.futex"], name) + k(SYSCALL_FUTEX), None),
            (5, http + u(["main.(*api).checkout", "database/sql.(*DB).QueryContext",
                          "database/sql.(*DB).conn", "runtime.selectgo", "runtime.gopark"], name)
             + u(["runtime.park_m", "runtime.schedule", "runtime.stopm", "runtime.futexsleep"], name)
             + k(SYSCALL_FUTEX), "grow"),
        ],
    }


PROGRAMS = {
    "postgres": {
        "cpu": [
            (40, u(PG_BASE + ["exec_simple_query", "PortalRun", "PortalRunSelect", "standard_ExecutorRun",
                              "ExecutePlan", "ExecScan", "SeqNext", "heap_getnextslot", "heapgettup_pagemode",
                              "heap_prepare_pagescan", "HeapTupleSatisfiesVisibility"], "postgres"), None),
            (15, u(PG_BASE + ["exec_simple_query", "pg_plan_queries", "pg_plan_query", "planner",
                              "standard_planner", "subquery_planner", "grouping_planner", "query_planner",
                              "make_one_rel", "set_base_rel_pathlists"], "postgres"), None),
            (10, u(PG_BASE + ["pq_getbyte", "pq_recvbuf", "secure_read", "__libc_recv"], "postgres")
             + u(["__GI___libc_recv"], "libc.so.6")
             + k(["entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_recvfrom",
                  "__sys_recvfrom", "tcp_recvmsg", "tcp_recvmsg_locked", "skb_copy_datagram_iter"]), None),
        ],
        "offcpu": [
            (40, u(PG_BASE + ["WaitEventSetWait", "WaitEventSetWaitBlock", "epoll_wait"], "postgres")
             + k(SYSCALL_EPOLL), None),
            (20, u(PG_BASE + ["exec_simple_query", "PortalRun", "ExecScan", "heap_getnextslot",
                              "ReadBufferExtended", "mdreadv", "FileReadV", "pg_preadv"], "postgres")
             + k(SYSCALL_READ_BLOCK), None),
        ],
    },
    "nginx": {
        "cpu": [
            (25, u(NGX_BASE + ["ngx_epoll_process_events", "ngx_http_wait_request_handler",
                               "ngx_http_process_request_line", "ngx_http_process_request_headers",
                               "ngx_http_process_request", "ngx_http_handler", "ngx_http_core_run_phases",
                               "ngx_http_proxy_handler", "ngx_http_upstream_init"], "nginx"), None),
            (20, u(NGX_BASE + ["ngx_epoll_process_events", "ngx_ssl_handshake_handler", "ngx_ssl_handshake"],
                   "nginx") + u(["SSL_do_handshake", "ossl_statem_accept", "state_machine",
                                 "tls_process_client_key_exchange", "EVP_PKEY_derive", "ecx_derive",
                                 "ossl_x25519", "x25519_scalar_mulx"], "libssl.so.3"), None),
            (10, u(NGX_BASE + ["ngx_epoll_process_events", "ngx_http_upstream_handler",
                               "ngx_http_upstream_process_header", "ngx_ssl_write"], "nginx")
             + u(["SSL_write", "ssl3_write_bytes", "tls_write_records", "aesni_gcm_encrypt"], "libssl.so.3"), None),
        ],
        "offcpu": [
            (60, u(NGX_BASE + ["ngx_epoll_process_events", "epoll_wait"], "nginx") + k(SYSCALL_EPOLL), None),
        ],
    },
    "java": {
        "cpu": [
            (30, u(JAVA_BASE + ["com.shop.payments.Worker.run", "com.shop.payments.Ledger.post",
                                "com.fasterxml.jackson.databind.ObjectMapper.writeValueAsBytes",
                                "com.fasterxml.jackson.core.json.UTF8JsonGenerator.writeString"], "libjvm.so"), None),
            (12, u(["start_thread", "thread_native_entry", "GCTaskThread::run", "G1ParTask::work",
                    "G1ParScanThreadState::trim_queue", "G1ParScanThreadState::do_copy_to_survivor_space"],
                   "libjvm.so"), None),
            (8, u(["start_thread", "thread_native_entry", "CompileBroker::compiler_thread_loop",
                   "C2Compiler::compile_method", "Compile::Compile", "PhaseIdealLoop::optimize"], "libjvm.so"), None),
        ],
        "offcpu": [
            (50, u(JAVA_BASE + ["java.util.concurrent.LinkedBlockingQueue.take",
                                "java.util.concurrent.locks.LockSupport.park", "Unsafe_Park", "Parker::park",
                                "__pthread_cond_wait"], "libjvm.so") + k(SYSCALL_FUTEX), None),
        ],
    },
    "python3": {
        "cpu": [
            (30, u(PY_BASE + ["_PyEval_EvalFrameDefault"] * 12 + ["list_sort_impl", "unsafe_object_compare",
                                                                   "PyObject_RichCompare"], "python3.11"), None),
            (20, u(PY_BASE + ["_PyEval_EvalFrameDefault"] * 6 + ["_PyObject_MakeTpCall", "_json_encode",
                                                                  "encoder_listencode_obj",
                                                                  "encoder_listencode_dict"], "python3.11"), None),
        ],
        "offcpu": [
            (40, u(PY_BASE + ["_PyEval_EvalFrameDefault"] * 4 + ["time_sleep", "pysleep", "clock_nanosleep"],
                   "python3.11") + k(["entry_SYSCALL_64_after_hwframe", "do_syscall_64",
                                      "__x64_sys_clock_nanosleep", "hrtimer_nanosleep", "do_nanosleep",
                                      "schedule", "__schedule"]), None),
        ],
    },
    "redis-server": {
        "cpu": [
            (30, u(["_start", "__libc_start_main_impl", "main", "aeMain", "aeProcessEvents",
                    "readQueryFromClient", "processInputBuffer", "processCommand", "call", "getCommand",
                    "lookupKeyReadOrReply", "dictFind", "siphash"], "redis-server"), None),
        ],
        "offcpu": [
            (60, u(["_start", "__libc_start_main_impl", "main", "aeMain", "aeProcessEvents", "aeApiPoll",
                    "epoll_wait"], "redis-server") + k(SYSCALL_EPOLL), None),
        ],
    },
    "kworker": {
        "cpu": [
            (10, k(KTHREAD + ["worker_thread", "process_one_work", "vmstat_update", "refresh_cpu_vm_stats"]), None),
            (6, k(KTHREAD + ["worker_thread", "process_one_work", "flush_to_ldisc", "n_tty_receive_buf"]), None),
        ],
        "offcpu": [
            (50, k(KTHREAD + ["worker_thread", "schedule", "__schedule"]), None),
        ],
    },
    "systemd": {
        "cpu": [
            (10, u(["_start", "__libc_start_main_impl", "main", "manager_loop", "sd_event_run",
                    "sd_event_dispatch", "source_dispatch", "on_cgroup_inotify_event"], "systemd"), None),
        ],
        "offcpu": [
            (50, u(["_start", "__libc_start_main_impl", "main", "manager_loop", "sd_event_run", "sd_event_wait",
                    "epoll_wait"], "systemd") + k(SYSCALL_EPOLL), None),
        ],
    },
}
for _svc in ["checkout-api", "cart-service", "catalog", "kubelet", "containerd", "envoy"]:
    PROGRAMS[_svc] = go_service(_svc)

# (comm, program, count, exe, pod namespace or None for host processes, container?)
FLEET = [
    ("checkout-api", "checkout-api", 6, "/usr/local/bin/checkout-api", "shop", True),
    ("cart-service", "cart-service", 8, "/app/cart-service", "shop", True),
    ("catalog", "catalog", 8, "/app/catalog", "shop", True),
    ("postgres", "postgres", 160, "/usr/lib/postgresql/16/bin/postgres", "db", True),
    ("nginx", "nginx", 66, "/usr/sbin/nginx", "ingress", True),
    ("java", "java", 12, "/usr/lib/jvm/java-21-openjdk-amd64/bin/java", "payments", True),
    ("python3", "python3", 90, "/usr/bin/python3.11", "jobs", True),
    ("redis-server", "redis-server", 20, "/usr/bin/redis-server", "cache", True),
    ("envoy", "envoy", 30, "/usr/local/bin/envoy", "shop", True),
    ("kubelet", "kubelet", 1, "/usr/bin/kubelet", None, False),
    ("containerd", "containerd", 1, "/usr/bin/containerd", None, False),
    ("systemd", "systemd", 40, "/usr/lib/systemd/systemd", None, False),
    ("kworker", "kworker", 0, None, None, False),  # filled up to the requested count
]


def hexid(text, n=64):
    out = ""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{text}/{i}".encode()).hexdigest()
        i += 1
    return out[:n]


def build_host(n_procs):
    rng = random.Random(7)
    procs = []
    pid = 1
    total_fixed = sum(f[2] for f in FLEET)
    for comm, prog, count, exe, ns, in_container in FLEET:
        if count == 0:
            count = max(0, n_procs - total_fixed)
        replicas = max(1, count // 10) if in_container else 0
        for i in range(count):
            pid += rng.randint(1, 40)
            container = pod = None
            if in_container:
                r = i % replicas
                container = hexid(f"{comm}-{r}")
                pod = f"{ns}/{comm}-{hexid(comm, 9)}-{hexid(f'{comm}{r}', 5)}"
            name = comm
            if prog == "kworker":
                name = f"kworker/{rng.randint(0, 7)}:{rng.randint(0, 3)}"
                if rng.random() < 0.3:
                    name = rng.choice(["ksoftirqd/", "migration/", "rcu_preempt", "kcompactd"]) + \
                        (str(rng.randint(0, 7)) if rng.random() < 0.7 else "")
            heavy = prog in ("checkout-api", "postgres", "java", "nginx", "cart-service") and i < 4
            cpu_rate = rng.lognormvariate(-4.5 if not heavy else -2.0, 1.3)  # CPU seconds per second
            cpu_rate = min(cpu_rate, 1.8)
            if comm == "checkout-api" and i == 0:
                cpu_rate = 0.9  # the busiest process on the host
            procs.append({
                "pid": pid, "comm": name, "exe": exe, "container_id": container, "pod": pod,
                "alive": rng.random() > 0.02, "program": prog, "cpu_rate": cpu_rate,
                "offcpu_rate": rng.uniform(0.5, 12.0) if prog != "kworker" else rng.uniform(0.5, 1.0),
                "runq_scale_ns": rng.lognormvariate(9.0, 1.0),
            })
    return procs


# ---------------------------------------------------------------- trees

def noise(key, lo=0.75, hi=1.25):
    h = int(hashlib.md5(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return lo + (hi - lo) * h


def add_stack(root, frames, value):
    node = root
    node["value"] += value
    for name, kind, module in frames:
        key = (name, kind, module)
        child = node["_index"].get(key)
        if child is None:
            child = {"name": name, "value": 0, "_index": {}}
            if kind:
                child["kind"] = kind
            if module:
                child["module"] = module
            node["_index"][key] = child
        child["value"] += value
        node = child


def finish(node):
    children = list(node.pop("_index").values())
    if children:
        node["children"] = [finish(c) for c in children]
    return node


def count_nodes(node):
    return 1 + sum(count_nodes(c) for c in node.get("children", []))


def trim(root, max_nodes, key=lambda n: n["value"]):
    """API.md's max_nodes: keep the widest nodes (ties: shallower, then depth-first order)."""
    order = []

    def walk(n, depth):
        order.append((n, depth))
        for c in sorted(n.get("children", []), key=lambda c: c["name"]):
            walk(c, depth + 1)

    walk(root, 0)
    if len(order) <= max_nodes:
        return 0
    ranked = sorted(range(len(order)), key=lambda i: (-key(order[i][0]), order[i][1], i))
    keep = {id(order[i][0]) for i in ranked[:max_nodes]}

    def prune(n):
        if "children" in n:
            n["children"] = [c for c in n["children"] if id(c) in keep]
            for c in n["children"]:
                prune(c)
            if not n["children"]:
                del n["children"]

    prune(root)
    return len(order) - max_nodes


def select(procs, q):
    pid, container = q.get("pid"), q.get("container")
    if pid is not None and container is not None:
        raise BadRequest("give at most one of pid, container, all")
    if ("all" in q) and (pid is not None or container is not None):
        raise BadRequest("give at most one of pid, container, all")
    if pid is not None:
        try:
            p = int(pid)
        except ValueError:
            raise BadRequest(f'bad parameter pid: "{pid}" is not a process id')
        return [x for x in procs if x["pid"] == p]
    if container is not None:
        if len(container) < 12 and len(container) != 64:
            raise BadRequest(f'bad parameter container: "{container}" is shorter than 12 characters')
        chosen = [x for x in procs if x["container_id"] and x["container_id"].startswith(container)]
        if len({x["container_id"] for x in chosen}) > 1:
            raise BadRequest(f'bad parameter container: "{container}" matches more than one container')
        return chosen
    return procs


def profile_tree(procs, ptype, lo, hi):
    root = {"name": "all", "value": 0, "_index": {}}
    seconds = hi - lo
    if seconds <= 0:
        return finish(root)
    # Values vary per 60 s bucket of the range's start, so two ranges differ; "grow" stacks get
    # heavier the later the range (a regression to find in the diff view).
    bucket = int(lo // 60)
    age = (hi - STARTED) / 3600
    for p in procs:
        prog = PROGRAMS[p["program"]]
        stacks = prog.get(ptype, [])
        weight_sum = sum(w for w, _s, _g in stacks) or 1
        rate = p["cpu_rate"] if ptype == "cpu" else p["offcpu_rate"]
        for i, (w, stack, tag) in enumerate(stacks):
            share = w / weight_sum * noise(f"{p['pid']}/{i}/{bucket}")
            if tag == "grow":
                share *= 0.3 + 4 * age
            amount = rate * seconds * share
            value = round(amount * CPU_HZ) if ptype == "cpu" else round(amount * 1e9)
            if value > 0:
                add_stack(root, [(p["comm"], "process", None)] + stack, value)
    return finish(root)


def diff_trees(a, b, a_total, b_total):
    def share(v, t):
        return v / t if t else 0.0

    def merge(na, nb):
        out = {"name": (nb or na)["name"]}
        for f in ("kind", "module"):
            if f in (nb or na):
                out[f] = (nb or na)[f]
        out["value"] = nb["value"] if nb else 0
        out["a_value"] = na["value"] if na else 0
        out["delta"] = round(share(out["value"], b_total) - share(out["a_value"], a_total), 6)
        ka = {(c["name"], c.get("kind"), c.get("module")): c for c in (na or {}).get("children", [])}
        kb = {(c["name"], c.get("kind"), c.get("module")): c for c in (nb or {}).get("children", [])}
        keys = list(kb) + [x for x in ka if x not in kb]
        if keys:
            out["children"] = [merge(ka.get(x), kb.get(x)) for x in keys]
        return out

    return merge(a, b)


def histogram(procs, lo, hi):
    seconds = max(0.0, hi - lo)
    counts = {}
    total = 0
    sum_ns = 0
    max_ns = None
    for p in procs[:400]:  # enough for the shape; cheap
        scale = p["runq_scale_ns"]
        n = int(seconds * (20 if p["program"] != "kworker" else 2) * noise(f"h{p['pid']}", 0.5, 1.5))
        rng = random.Random(p["pid"] * 7919 + int(lo // 60))
        for _ in range(min(n, 2000)):
            v = int(rng.lognormvariate(math.log(scale), 1.1))
            b = max(v, 1).bit_length()
            counts[b] = counts.get(b, 0) + 1
            total += 1
            sum_ns += v
            max_ns = v if max_ns is None else max(max_ns, v)
    if len(procs) > 400 and total:
        f = len(procs) / 400
        counts = {b: int(c * f) for b, c in counts.items()}
        total = sum(counts.values())
        sum_ns = int(sum_ns * f)
    buckets = [{"le_ns": (1 << b) - 1, "count": counts[b]} for b in sorted(counts)]

    def pct(q):
        if not total:
            return None
        target = q * total
        seen = 0
        for b in sorted(counts):
            if seen + counts[b] >= target:
                lo_b, hi_b = (1 << (b - 1)), (1 << b) - 1
                return int(lo_b + (hi_b - lo_b) * (target - seen) / counts[b])
            seen += counts[b]
        return None

    return {"buckets": buckets, "count": total, "sum_ns": sum_ns, "p50_ns": pct(0.5), "p90_ns": pct(0.9),
            "p99_ns": pct(0.99), "max_ns": max_ns}


TYPES = {
    "types": [
        {"type": "cpu", "label": "CPU", "unit": "samples", "period_ns": PERIOD_NS, "enabled": True,
         "description": f"On-CPU stacks sampled at {CPU_HZ} Hz per CPU"},
        {"type": "offcpu", "label": "Off-CPU", "unit": "nanoseconds", "enabled": True,
         "description": "Time blocked off-CPU, by the stack that blocked"},
        {"type": "lock", "label": "Lock contention", "unit": "nanoseconds", "enabled": False,
         "reason": "kernel lacks tracepoint lock:contention_begin", "description": "Time waiting for locks"},
    ],
    "histograms": [
        {"name": "runqueue", "label": "Run-queue latency", "enabled": True,
         "description": "Time from wakeup to running on a CPU, per thread wakeup"},
    ],
}
DROPS = {"drop_ringbuf_full": 0, "drop_stack_evicted": 0, "drop_stack_missing": 12}


def check_type(q):
    t = q.get("type")
    if t is None:
        raise BadRequest("missing parameter type")
    entry = next((x for x in TYPES["types"] if x["type"] == t), None)
    if entry is None:
        names = ", ".join(x["type"] for x in TYPES["types"] if x["enabled"])
        raise BadRequest(f'unknown profile type "{t}"; available: {names}')
    if not entry["enabled"]:
        raise BadRequest(f'profile type "{t}" is disabled: {entry["reason"]}')
    return entry


def max_nodes_param(q):
    if "max_nodes" not in q:
        return None
    try:
        n = int(q["max_nodes"])
        if n < 1:
            raise ValueError
        return n
    except ValueError:
        raise BadRequest(f'bad parameter max_nodes: "{q["max_nodes"]}" is not an integer >= 1')


def type_header(entry):
    out = {"type": entry["type"], "unit": entry["unit"]}
    if "period_ns" in entry:
        out["period_ns"] = entry["period_ns"]
    return out


class Api:
    def __init__(self, n_procs, delay):
        self.procs = build_host(n_procs)
        self.delay = delay

    def processes(self, q, now):
        window = parse_duration(q.get("window", "60s"), "window")
        lo, hi = covered(now - window, now, now)
        seconds = hi - lo
        out = []
        for p in self.procs:
            out.append({
                "pid": p["pid"], "comm": p["comm"], "exe": p["exe"], "container_id": p["container_id"],
                "pod": p["pod"], "alive": p["alive"],
                "cpu_seconds": round(p["cpu_rate"] * seconds * noise(f"c{p['pid']}{int(now // 10)}", 0.9, 1.1), 3),
                "offcpu_seconds": round(p["offcpu_rate"] * seconds, 3),
                "runq_p99_ns": int(p["runq_scale_ns"] * 12),
                "go": p["program"] in GO_PROGRAMS,
            })
        return {"from": rfc3339(lo), "to": rfc3339(hi), "processes": out}

    def range(self, q, now, f="from", t="to", required=False):
        if required and (f not in q or t not in q):
            raise BadRequest(f"missing parameter {f if f not in q else t}")
        lo = parse_time(q.get(f, "now-1m"), f, now)
        hi = parse_time(q.get(t, "now"), t, now)
        if hi <= lo:
            raise BadRequest(f"bad range: {f} must be before {t}")
        return covered(lo, hi, now)

    def flamegraph(self, q, now):
        entry = check_type(q)
        procs = select(self.procs, q)
        lo, hi = self.range(q, now)
        max_nodes = max_nodes_param(q)
        root = profile_tree(procs, entry["type"], lo, hi)
        trimmed = trim(root, max_nodes) if max_nodes else 0
        return {**type_header(entry), "from": rfc3339(lo), "to": rfc3339(hi), "total": root["value"],
                "trimmed": trimmed, "drops": DROPS, "root": root}

    def diff(self, q, now):
        entry = check_type(q)
        procs = select(self.procs, q)
        alo, ahi = self.range(q, now, "a_from", "a_to", True)
        blo, bhi = self.range(q, now, "b_from", "b_to", True)
        max_nodes = max_nodes_param(q)
        a = profile_tree(procs, entry["type"], alo, ahi)
        b = profile_tree(procs, entry["type"], blo, bhi)
        root = diff_trees(a, b, a["value"], b["value"])
        trimmed = trim(root, max_nodes, key=lambda n: max(n["value"], n["a_value"])) if max_nodes else 0
        return {**type_header(entry),
                "a": {"from": rfc3339(alo), "to": rfc3339(ahi), "total": a["value"]},
                "b": {"from": rfc3339(blo), "to": rfc3339(bhi), "total": b["value"]},
                "trimmed": trimmed, "root": root}

    def histograms(self, q, now):
        name = q.get("name")
        if name is None:
            raise BadRequest("missing parameter name")
        if name not in [h["name"] for h in TYPES["histograms"]]:
            raise BadRequest(f'unknown histogram "{name}"; available: runqueue')
        procs = select(self.procs, q)
        lo, hi = self.range(q, now)
        return {"name": name, "from": rfc3339(lo), "to": rfc3339(hi), **histogram(procs, lo, hi)}

    def status(self, q, now):
        oldest = max(STARTED, now - RETENTION_S)
        return {
            "version": "0.1.0-mock", "hostname": "mock-node-1", "started": rfc3339(STARTED), "now": rfc3339(now),
            "collectors": [
                {"name": "cpu", "enabled": True, "detail": f"{CPU_HZ} Hz on 32 CPUs"},
                {"name": "offcpu", "enabled": True, "detail": "sched_switch (tp_btf)"},
                {"name": "runqueue", "enabled": True, "detail": "sched_wakeup, sched_switch"},
                {"name": "lock", "enabled": False, "reason": "kernel lacks tracepoint lock:contention_begin"},
            ],
            "drops": DROPS,
            "windows": {"count": int((now - oldest) // WINDOW_S), "seconds": WINDOW_S,
                        "oldest": rfc3339(math.ceil(oldest / WINDOW_S) * WINDOW_S),
                        "newest": rfc3339(math.floor(now / WINDOW_S) * WINDOW_S), "retention_seconds": RETENTION_S},
            "memory": {"rss_bytes": 41943040, "store_bytes": 12582912, "bpf_maps_bytes": 25165824},
        }

    def types(self, q, now):
        return TYPES

    def goroutines(self, q, now):
        text = q.get("pid")
        if text is None:
            raise BadRequest("missing parameter pid (a Go process)")
        if not text.isdigit() or int(text) == 0:
            raise BadRequest(f'bad parameter pid: "{text}" is not a process id')
        older = parse_duration(q.get("older_than", "1m"), "older_than")
        p = next((p for p in self.procs if p["pid"] == int(text)), None)
        if p is None:
            raise Refused(404, f"no process with PID {text}")
        if p["program"] not in GO_PROGRAMS:
            raise Refused(422, f"process {text} ({p['exe']}) is not a Go program: its executable has no .gopclntab")
        return mock_goroutines(p, older, now)


# The Go services of the fleet, and made-up goroutine groups of theirs: (count, state, wait
# reason, waited seconds, creator, leaf-first stack of the program's own frames).
GO_PROGRAMS = ("checkout-api", "cart-service", "catalog")
GO_GROUPS = [
    (412, "waiting", "IO wait", 30, "net/http.(*Server).Serve", ["internal/poll.runtime_pollWait", "net.(*conn).Read", "net/http.(*conn).serve"]),
    (160, "waiting", "chan receive", 3600, "main.(*api).startWatchers", ["runtime.chanrecv1", "main.(*api).watchCart"]),
    (40, "waiting", "select", 5, "main.(*pool).start", ["runtime.selectgo", "main.(*pool).worker"]),
    (12, "waiting", "sync.Mutex.Lock", 0.2, "net/http.(*Server).Serve", ["internal/sync.runtime_SemacquireMutex", "main.(*cache).get", "net/http.(*conn).serve"]),
    (3, "runnable", None, None, "main.(*pool).start", ["main.(*api).applyCoupons", "main.(*pool).worker"]),
    (1, "syscall", None, 12, None, ["syscall.Syscall", "main.main"]),
]


def mock_goroutines(p, older_than_s, now):
    def frame(name, line=42):
        return {"function": name, "file": f"/src/{name.split('.')[0]}.go", "line": line, "inlined": False}

    groups = []
    for count, state, reason, waited, creator, stack in GO_GROUPS:
        frames = ([frame("runtime.gopark")] if state == "waiting" else []) + [frame(f) for f in stack] + \
            ([frame("runtime.goexit")] if creator else [])
        groups.append({
            "count": count, "state": state, "wait_reason": reason,
            "waiting_ns": None if waited is None else {"min": int(waited * 1e9), "max": int(waited * 1.2e9)},
            "created_by": frame(creator) if creator else None, "stack": frames,
        })
    by_state, by_reason = {}, {}
    for g in groups:
        by_state[g["state"]] = by_state.get(g["state"], 0) + g["count"]
        if g["wait_reason"]:
            by_reason[g["wait_reason"]] = by_reason.get(g["wait_reason"], 0) + g["count"]
    leaks = [g for g in groups if g["waiting_ns"] and g["waiting_ns"]["min"] > older_than_s * 1e9]
    return {
        "schema_version": 1, "pid": p["pid"], "comm": p["comm"], "go_version": "go1.24.11",
        "live": sum(by_state.values()), "system": 5, "by_state": by_state, "by_wait_reason": by_reason,
        "view": "stacks", "older_than_ns": None, "groups": groups, "groups_omitted": 0,
        "skipped": 0, "truncated_stacks": 0, "taken_at": rfc3339(now), "census_ms": 3.2,
        "leaks": {"older_than_ns": int(older_than_s * 1e9), "count": sum(g["count"] for g in leaks),
                  "groups": leaks, "groups_omitted": 0},
        "sched_latency": mock_sched_latency(p["pid"], now),
    }


def mock_sched_latency(pid, now, census_s=30):
    """A made-up runtime histogram in Go 1.21's buckets (bucket b >= 1 is [2^(b+7), 2^(b+8)) in
    4 steps), between two census reads: counts, midpoint sum and quantiles as the daemon makes them."""
    rng = random.Random(pid)
    ranges = []  # (lo, hi, count)
    for b in range(3, 14):
        for j in range(4):
            lo = (1 << (b + 7)) + j * (1 << (b + 5))
            peak = 7.5 + rng.random()
            n = int(4000 * math.exp(-((b + j / 4 - peak) ** 2) / 2.5))
            ranges.append((lo, lo + (1 << (b + 5)), n))
    while ranges and not ranges[-1][2]:
        ranges.pop()
    first = next(i for i, r in enumerate(ranges) if r[2])
    ranges = ranges[max(first - 1, 0):]
    count = sum(n for _, _, n in ranges)
    total = sum(n * (lo + (hi - lo) // 2) for lo, hi, n in ranges)

    def quantile(q):
        rank, seen = max(math.ceil(q * count), 1), 0
        for lo, hi, n in ranges:
            if n and seen + n >= rank:
                return lo + int((hi - lo) * (rank - seen) / n)
            seen += n

    to = math.floor(now / census_s) * census_s
    return {
        "name": "go_sched_latency", "source": "runtime", "from": rfc3339(to - census_s), "to": rfc3339(to),
        "census_interval_seconds": census_s,
        "buckets": [{"le_ns": hi - 1, "count": n} for _, hi, n in ranges],
        "count": count, "sum_ns": total, "mean_ns": total // count,
        "p50_ns": quantile(0.5), "p90_ns": quantile(0.9), "p99_ns": quantile(0.99), "max_ns": None,
    }


ROUTES = {
    "/api/v1/processes": Api.processes,
    "/api/v1/types": Api.types,
    "/api/v1/flamegraph": Api.flamegraph,
    "/api/v1/flamegraph/diff": Api.diff,
    "/api/v1/histograms": Api.histograms,
    "/api/v1/status": Api.status,
    "/api/v1/goroutines": Api.goroutines,
}


def make_handler(api):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            if api.verbose:
                sys.stderr.write("mock: " + fmt % args + "\n")

        def send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the UI aborted a superseded request

        def send_json(self, code, obj):
            self.send(code, json.dumps(obj, separators=(",", ":")).encode(), "application/json; charset=utf-8")

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path.startswith("/api/"):
                route = ROUTES.get(url.path)
                if route is None:
                    return self.send_json(404, {"error": f"no such endpoint: {url.path}"})
                q = {key: vals[-1] for key, vals in parse_qs(url.query, keep_blank_values=True).items()}
                if api.delay:
                    time.sleep(api.delay)
                try:
                    return self.send_json(200, route(api, q, time.time()))
                except BadRequest as e:
                    return self.send_json(400, {"error": str(e)})
                except Refused as e:
                    return self.send_json(e.code, {"error": str(e)})
            name = "index.html" if url.path == "/" else url.path.lstrip("/")
            path = (WEB_DIR / name).resolve()
            ctype = CONTENT_TYPES.get(path.suffix)
            if WEB_DIR not in path.parents or "test" in path.relative_to(WEB_DIR).parts[:1] \
                    or ctype is None or not path.is_file():
                return self.send_json(404, {"error": f"no such file: {url.path}"})
            return self.send(200, path.read_bytes(), ctype)

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7471)
    ap.add_argument("--processes", type=int, default=1000)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each API answer")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    api = Api(args.processes, args.delay)
    api.verbose = args.verbose
    server = ThreadingHTTPServer((args.host, args.port), make_handler(api))
    print(f"mock loupe daemon on http://{args.host}:{server.server_port}/ ({len(api.procs)} processes)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""perf/run.py - build gort's benchmarks and their Go and pthread counterparts, run
them side by side, and print one table of medians, ratios and goals.

    perf/run.py [--runs N] [--only a,b] [--build-dir DIR] [--no-build] [--json FILE]

Environment: PERF_RUNS (default 5), PERF_MS (time budget of a time-bounded
measurement, default 250), PERF_IDLE_N (tasks in the idle-spawn benchmark, default
200000; the issue's headline is 1000000, which takes minutes on a slow VM),
PERF_PREEMPT_N (1 ms sleeps per spinner count in preempt_latency, default 200, at most
500), PERF_TIMEOUT (seconds per process, default 120), PERF_BUILD_DIR (default
<repo>/build-perf), PERF_JOBS (build parallelism, default 2).

Each run of each benchmark is a fresh process; within one repetition the gort, Go and
pthread versions of a benchmark run back to back, in an order that rotates from one
repetition to the next, so slow drifts of a shared machine hit all of them alike.
"""
import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (procs list, has pthread version, extra args)
BENCHES = [
    ("chan_pingpong", [1, 2], True),
    ("yield", [1], True),
    ("idle_spawn", [2], False),
    ("spawn_finish", [1, 2], True),
    ("mutex", [2], True),
    ("select_fanin", [1, 2], False),
    ("cpu_hash", [1, 2], True),
    ("preempt_latency", [1], False),  # issue 4; GOMAXPROCS=1 vs 1 P; ~10 s a run
]

# Table rows: (result name, procs, metric, unit, label)
ROWS = [
    ("chan_pingpong", 1, "ns_per_op", "ns/handoff", "chan ping-pong (unbuffered)"),
    ("chan_pingpong", 2, "ns_per_op", "ns/handoff", "chan ping-pong (unbuffered)"),
    ("yield", 1, "ns_per_op", "ns/yield", "yield between 2 tasks"),
    ("idle_spawn_cold", 2, "ns_per_op", "ns/task", "idle spawn, cold (fresh process)"),
    ("idle_spawn_warm", 2, "ns_per_op", "ns/task", "idle spawn, warm (memory reused)"),
    ("idle_rss", 2, "bytes_per_task", "B/task", "idle task RSS"),
    ("idle_exit", 2, "ns_per_op", "ns/task", "idle tasks: close to all exited"),
    ("spawn_finish", 1, "ns_per_op", "ns/task", "spawn+finish, wait group"),
    ("spawn_finish", 2, "ns_per_op", "ns/task", "spawn+finish, wait group"),
    ("mutex", 2, "ns_per_op", "ns/op", "contended mutex, 4 tasks"),
    ("select_fanin", 1, "ns_per_op", "ns/msg", "select fan-in, 4 producers"),
    ("select_fanin", 2, "ns_per_op", "ns/msg", "select fan-in, 4 producers"),
    ("cpu_hash", 1, "ns_per_op", "ns/step", "CPU-bound hash chains, 64 tasks"),
    ("cpu_hash", 2, "ns_per_op", "ns/step", "CPU-bound hash chains, 64 tasks"),
    ("cpu_speedup", 2, "speedup", "x", "CPU-bound speed-up 2P/1P"),
    ("preempt_late_median_1", 1, "value", "us late", "sleeper 1 ms + 1 spinner: median"),
    ("preempt_late_max_1", 1, "value", "us late", "sleeper 1 ms + 1 spinner: max"),
    ("preempt_late_median_4", 1, "value", "us late", "sleeper 1 ms + 4 spinners: median"),
    ("preempt_late_max_4", 1, "value", "us late", "sleeper 1 ms + 4 spinners: max"),
    ("preempt_jain", 1, "value", "index", "4 spinners 2 s: Jain's fairness"),
    ("preempt_overhead", 1, "value", "% vs OFF", "preemption cost, CPU-bound (gort only)"),
]

# Goals from the issue: (row name, procs or None for all) -> list of
# (versus, op, bound); a ratio goal compares gort/versus, "self" compares gort's value.
GOALS = {
    "chan_pingpong": [("go", "<=", 0.25), ("pthread", "<=", 0.05)],
    "yield": [("go", "<=", 0.25)],
    "idle_spawn_cold": [("go", "<=", 0.1)],
    "idle_spawn_warm": [("go", "<=", 0.5)],
    "idle_rss": [("go", "<=", 0.8)],
    "spawn_finish": [("go", "<=", 0.5)],
    "mutex": [("go", "<=", 1.0)],
    "select_fanin": [("go", "<=", 1.0)],
    "cpu_speedup": [("self", ">=", 1.8)],
    # issue 4 (absolute bounds, in the row's unit)
    "preempt_late_median_1": [("self", "<=", 2000, " us")],
    "preempt_late_median_4": [("self", "<=", 2000, " us")],
    "preempt_late_max_1": [("self", "<=", 12000, " us")],
    "preempt_late_max_4": [("self", "<=", 12000, " us")],
    "preempt_jain": [("self", ">=", 0.99, "")],
    "preempt_overhead": [("self", "<=", 1.0, " %")],
}

RESULT_RE = re.compile(r"^RESULT\s+(.*)$")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def build(build_dir, jobs, want_gort):
    """Builds what is there to build; returns {impl: path or None}."""
    exes = {"gort": {}, "pthread": None, "go": None}
    perf_dir = os.path.join(build_dir, "perf")
    if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        log(f"configuring {build_dir}")
        r = sh(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
        if r.returncode != 0:
            log(r.stdout[-3000:])
            log("cmake configure failed: no C benchmarks")
    targets = ["bench_" + b for b, _, _ in BENCHES] if want_gort else []
    if os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        r = sh(["cmake", "--build", build_dir, "-j", str(jobs), "--target", "bench_pthread"])
        if r.returncode == 0:
            exes["pthread"] = os.path.join(perf_dir, "bench_pthread")
        else:
            log(r.stdout[-3000:])
            log("bench_pthread failed to build")
        if targets:
            r = sh(["cmake", "--build", build_dir, "-j", str(jobs), "--target", *targets])
            if r.returncode != 0:
                log(r.stdout[-4000:])
                log("some gort benchmarks failed to build; running what exists")
    for b, _, _ in BENCHES:
        p = os.path.join(perf_dir, "bench_" + b)
        if want_gort and os.path.exists(p):
            exes["gort"][b] = p
    os.makedirs(perf_dir, exist_ok=True)
    env = dict(os.environ, GO111MODULE="on", GOFLAGS="-mod=mod", GOPROXY="off",
               GOCACHE=os.path.join(perf_dir, "gocache"), GOPATH=os.path.join(perf_dir, "gopath"))
    out = os.path.join(perf_dir, "bench_go")
    try:
        r = sh(["go", "build", "-o", out, "."], cwd=os.path.join(ROOT, "perf", "go"), env=env)
        if r.returncode == 0:
            exes["go"] = out
        else:
            log(r.stdout[-3000:])
            log("go build failed: no Go column")
    except FileNotFoundError:
        log("go not installed: no Go column")
    return exes


def run_one(cmd, env, timeout):
    """Runs one benchmark process; returns (list of result dicts, error or None)."""
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [], f"timed out after {timeout} s"
    results = []
    for line in r.stdout.splitlines():
        m = RESULT_RE.match(line)
        if m:
            d = dict(kv.split("=", 1) for kv in m.group(1).split())
            results.append(d)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        return results, f"exit {r.returncode}: " + " | ".join(tail)
    if not results:
        return results, "no RESULT line"
    return results, None


def machine_info():
    model = "?"
    try:
        out = sh(["lscpu"]).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    info = {
        "cpu": model,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    try:
        info["go"] = sh(["go", "version"]).stdout.strip()
    except FileNotFoundError:
        info["go"] = "none"
    try:
        info["cc"] = sh(["gcc", "--version"]).stdout.splitlines()[0]
    except (FileNotFoundError, IndexError):
        info["cc"] = "?"
    return info


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=int(os.environ.get("PERF_RUNS", "5")))
    ap.add_argument("--ms", type=int, default=int(os.environ.get("PERF_MS", "250")))
    ap.add_argument("--idle-n", type=int, default=int(os.environ.get("PERF_IDLE_N", "200000")))
    ap.add_argument("--preempt-n", type=int, default=int(os.environ.get("PERF_PREEMPT_N", "200")))
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("PERF_TIMEOUT", "120")))
    ap.add_argument("--build-dir", default=os.environ.get("PERF_BUILD_DIR", os.path.join(ROOT, "build-perf")))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("PERF_JOBS", "2")))
    ap.add_argument("--only", default="", help="comma-separated benchmark names")
    ap.add_argument("--impls", default="gort,go,pthread", help="which implementations to run")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", default="", help="also write raw results here")
    a = ap.parse_args()

    impls = [x for x in a.impls.split(",") if x]
    only = set(x for x in a.only.split(",") if x)
    benches = [b for b in BENCHES if not only or b[0] in only]
    build_dir = os.path.abspath(a.build_dir)
    t_start = time.time()

    if a.no_build:
        perf_dir = os.path.join(build_dir, "perf")
        exes = {"gort": {b: os.path.join(perf_dir, "bench_" + b) for b, _, _ in BENCHES
                         if os.path.exists(os.path.join(perf_dir, "bench_" + b))},
                "pthread": os.path.join(perf_dir, "bench_pthread"),
                "go": os.path.join(perf_dir, "bench_go")}
        for k in ("pthread", "go"):
            if not os.path.exists(exes[k]):
                exes[k] = None
    else:
        exes = build(build_dir, a.jobs, "gort" in impls)

    # values[(name, procs, impl)] = list of (run index, value); checks for cpu_hash
    values = {}
    checks = {}
    failures = []
    for run in range(a.runs):
        log(f"run {run + 1}/{a.runs}")
        for bench, procs_list, has_pthread in benches:
            for procs in procs_list:
                order = [i for i in ("gort", "go", "pthread") if i in impls]
                if not has_pthread and "pthread" in order:
                    order.remove("pthread")
                k = run % len(order) if order else 0
                order = order[k:] + order[:k]
                for impl in order:
                    args = [f"procs={procs}", f"ms={a.ms}"]
                    if bench == "idle_spawn":
                        args.append(f"n={a.idle_n}")
                    if bench == "preempt_latency":
                        args.append(f"n={a.preempt_n}")
                    if impl == "gort":
                        exe = exes["gort"].get(bench)
                        cmd = [exe] + args if exe else None
                    else:
                        exe = exes[impl]
                        cmd = [exe, bench] + args if exe else None
                    if not cmd:
                        continue
                    env = dict(os.environ, GORT_PROCS=str(procs), GOMAXPROCS=str(procs))
                    results, err = run_one(cmd, env, a.timeout)
                    if err:
                        failures.append(f"{impl} {bench} procs={procs} run {run + 1}: {err}")
                        log(f"  FAIL {impl} {bench} procs={procs}: {err}")
                    for r in results:
                        key = (r["name"], int(r["procs"]), impl)
                        metric = next((m for m in ("ns_per_op", "bytes_per_task", "value")
                                       if m in r), None)
                        if metric is None:
                            continue
                        values.setdefault(key, []).append((run, float(r[metric])))
                        if "check" in r:
                            checks.setdefault(r["name"], set()).add((impl, r["check"]))

    # CPU speed-up: per implementation, per run, time(1P) / time(2P); median over runs.
    for impl in ("gort", "go", "pthread"):
        one = dict(values.get(("cpu_hash", 1, impl), []))
        two = dict(values.get(("cpu_hash", 2, impl), []))
        sp = [(r, one[r] / two[r]) for r in one if r in two and two[r] > 0]
        if sp:
            values[("cpu_speedup", 2, impl)] = sp

    def med(name, procs, impl):
        v = values.get((name, procs, impl))
        return statistics.median(x for _, x in v) if v else None

    def spread(name, procs, impl):
        v = [x for _, x in values.get((name, procs, impl), [])]
        if len(v) < 2:
            return ""
        m = statistics.median(v)
        return f"±{100 * (max(v) - min(v)) / 2 / m:.0f}%" if m else ""

    info = machine_info()
    print()
    print(f"machine: {info['cpu']}, {info['nproc']} CPUs, Linux {info['kernel']}, "
          f"load average at the end {info['loadavg']}")
    print(f"tools:   {info['cc']}; {info['go']}")
    cmd = " ".join(shlex.quote(x) for x in [os.path.relpath(sys.argv[0], os.getcwd())] + sys.argv[1:])
    envs = " ".join(f"{k}={os.environ[k]}" for k in ("PERF_RUNS", "PERF_MS", "PERF_IDLE_N")
                    if k in os.environ)
    print(f"command: {envs + ' ' if envs else ''}{cmd}   ({a.runs} runs, medians; ms={a.ms}, "
          f"idle n={a.idle_n}; {time.time() - t_start:.0f} s)")
    print()
    header = ["benchmark", "P", "unit", "gort", "Go", "pthread", "gort/Go", "gort/pthread",
              "goal", "result"]
    rows = []
    n_pass = n_miss = 0
    for name, procs, metric, unit, label in ROWS:
        bench_of = {"idle_spawn_cold": "idle_spawn", "idle_spawn_warm": "idle_spawn",
                    "idle_rss": "idle_spawn", "idle_exit": "idle_spawn",
                    "cpu_speedup": "cpu_hash"}.get(name, name)
        if name.startswith("preempt_"):
            bench_of = "preempt_latency"
        if only and bench_of not in only:
            continue
        g, go, pt = (med(name, procs, i) for i in ("gort", "go", "pthread"))
        rg = g / go if g is not None and go else None
        rp = g / pt if g is not None and pt else None
        goal_txt, verdicts = [], []
        for versus, op, bound, *gunit in GOALS.get(name, []):
            if versus == "self":
                goal_txt.append(f"{op}{bound}{gunit[0] if gunit else 'x'}")
                val = g
            else:
                goal_txt.append(f"{op}{bound}x {'Go' if versus == 'go' else 'pthr'}")
                val = rg if versus == "go" else rp
            if val is None:
                verdicts.append("n/a")
            elif (val <= bound) if op == "<=" else (val >= bound):
                verdicts.append("PASS")
            else:
                verdicts.append("MISS")
        verdict = ", ".join(verdicts)  # one per goal, in the goal column's order
        n_pass += verdicts.count("PASS")
        n_miss += verdicts.count("MISS")
        gs = spread(name, procs, "gort")
        f = (lambda v: "-" if v is None else f"{v:.4f}") if unit == "index" else fmt
        rows.append([label, str(procs), unit, f(g) + (f" {gs}" if gs else ""), f(go), f(pt),
                     fmt(rg) + ("x" if rg is not None else ""),
                     fmt(rp) + ("x" if rp is not None else ""), ", ".join(goal_txt), verdict])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    right = {1, 3, 4, 5, 6, 7}

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    print(line(header))
    print("|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(line(r))
    print()
    print(f"goals: {n_pass} PASS, {n_miss} MISS (gort ±: half the min-max range over runs; "
          f"lower is better except speed-up)")
    for name, s in checks.items():
        if len({c for _, c in s}) > 1:
            print(f"WARNING: {name}: implementations disagree on check=: {sorted(s)}")
    if failures:
        print(f"{len(failures)} failed process(es):")
        for f in failures:
            print("  " + f)
    if a.json:
        with open(a.json, "w") as fp:
            json.dump({"machine": info, "command": sys.argv, "runs": a.runs,
                       "values": {f"{k[0]}/{k[1]}/{k[2]}": [x for _, x in v] for k, v in values.items()},
                       "failures": failures}, fp, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

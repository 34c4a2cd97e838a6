#!/usr/bin/env python3
"""Summarises what bench/cluster.sh measured: results.json and summary.md
(printed on stdout) in RESULTS_DIR. Standard library only.

Usage: cluster-report.py RESULTS_DIR
(the run's settings come from the environment: QUICK, PINNING, LOAD_BEFORE,
DROPPED and PARAMS, a JSON object, as cluster.sh exports them)

Each figure is the median over the run's repetitions; the ratios are ratios
of those medians. "standalone" is a node without --cluster.
"""
import json
import os
import statistics
import subprocess
import sys

out = sys.argv[1]
ALONE, SAME, CROSS = "standalone", "same-node", "cross-node"


def rows(name):
    with open(os.path.join(out, name + ".jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def median(group, key):
    values = [r[key] for r in group if r.get(key) is not None]
    return statistics.median(values) if values else None


def show(v, digits):
    return "-" if v is None else f"{v:,.{digits}f}"


bcast, relay, lat = rows("broadcast"), rows("relay"), rows("latency")
params = json.loads(os.environ.get("PARAMS", "{}"))


def pick(table, label, **match):
    return [r for r in table if r["label"] == label and all(r.get(k) == v for k, v in match.items())]


# (measurement, table, key, digits, what the runs must match besides the label)
lines = []
for m in sorted({r["subscribers"] for r in bcast}):
    for q in ("50", "99"):
        lines.append((f"broadcast to {m} subscribers: all have it, p{q} (ms)",
                      bcast, f"complete_p{q}_ms", 2, {"subscribers": m}))
pairs = f"relay, {params.get('pairs', '?')} pairs x {params.get('inflight', '?')} in flight"
lines.append((f"{pairs}: msg/s", relay, "msg_per_s", 0, {}))
for q in ("50", "99"):
    lines.append((f"{pairs}: latency p{q} (us)", relay, f"p{q}_us", 0, {}))
for q in ("50", "99"):
    lines.append((f"relay, 1 message in flight: latency p{q} (us)", lat, f"p{q}_us", 0, {}))


def ratio(a, b):
    return a / b if a is not None and b else None


md = [
    "| measurement | standalone (no cluster) | same node | cross-node (via Redis) "
    "| cross / same | cross / standalone |",
    "|---|--:|--:|--:|--:|--:|",
]
table = []
for name, rows_, key, digits, match in lines:
    alone, same, cross = (median(pick(rows_, label, **match), key) for label in (ALONE, SAME, CROSS))
    md.append(f"| {name} | {show(alone, digits)} | {show(same, digits)} | {show(cross, digits)} "
              f"| {show(ratio(cross, same), 2)} | {show(ratio(cross, alone), 2)} |")
    table.append({"measurement": name, "key": key, "standalone": alone, "same_node": same,
                  "cross_node": cross, "ratio_cross_same": ratio(cross, same),
                  "ratio_cross_standalone": ratio(cross, alone),
                  "runs": len(pick(rows_, SAME, **match))})

cpu = ["", "CPU over the relay runs' measured windows, median (node A + node B + Redis, "
       "or node C; the load generator), 100% = one core:", ""]
for label in (ALONE, SAME, CROSS):
    runs = pick(relay, label)
    cols = zip(*(r["server_cpu_pct_each"] for r in runs))
    each = [median([{"c": c} for c in col], "c") for col in cols]
    cpu.append(f"- {label}: " + " + ".join(show(c, 0) + "%" for c in each)
               + f" = {show(median(runs, 'server_cpu_pct'), 0)}%; "
               f"loadgen {show(median(runs, 'loadgen_cpu_pct'), 0)}%")
summary = "\n".join(md + cpu) + "\n"

meta = {
    "quick": os.environ.get("QUICK") == "1",
    "nproc": os.cpu_count(),
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
    "kernel": os.uname().release,
    "pinning": os.environ.get("PINNING", ""),
    "rustc": sh("rustc --version"),
    "redis": sh("redis-server --version"),
    "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    # Other work on the machine: the 1/5/15-minute load averages before and after.
    "loadavg_before": os.environ.get("LOAD_BEFORE", ""),
    "loadavg_after": sh("cut -d' ' -f1-3 /proc/loadavg"),
    "params": params,
    "dropped_frames": os.environ.get("DROPPED", "").splitlines(),
}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "table": table, "broadcast": bcast, "relay": relay, "latency": lat},
              f, indent=1)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(summary)
print(summary, end="")

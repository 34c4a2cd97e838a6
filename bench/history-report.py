#!/usr/bin/env python3
"""Summarises what bench/history.sh measured: results.json and summary.md
(printed on stdout) in RESULTS_DIR. Standard library only.

Usage: history-report.py RESULTS_DIR
(the run's settings come from the environment: SMOKE, PINNING, LOAD_BEFORE
and PARAMS, a JSON object, as history.sh exports them)

Each figure is the median over the run's repetitions; the on/off ratios
are ratios of those medians, within one configuration (standalone, or one
clustered node with its Redis).
"""
import json
import os
import re
import statistics
import subprocess
import sys

out = sys.argv[1]
CONFIGS = ("standalone-off", "standalone-on", "cluster-off", "cluster-on")


def rows(name):
    with open(os.path.join(out, name + ".jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def show(v, digits):
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


publish, fanout, lat = rows("publish"), rows("fanout"), rows("latency")
params = json.loads(os.environ.get("PARAMS", "{}"))
load = (f"{params.get('publishers', '?')} publishers x {params.get('inflight', '?')} in flight, "
        f"{params.get('subscribers', '?')} subscribers")
m = params.get("fanout_subscribers", "?")

# (measurement, table, key, digits)
lines = [
    (f"publish, {load}: publishes/s", publish, "publishes_per_s", 0),
    (f"publish, {load}: deliveries/s", publish, "deliveries_per_s", 0),
    (f"publish, {load}: deliveries per server CPU-s", publish, "deliveries_per_server_cpu_s", 0),
    (f"publish, {load}: server CPU (%)", publish, "server_cpu_pct", 0),
    (f"publish, {load}: latency p50 (us)", publish, "p50_us", 0),
    (f"publish, {load}: latency p99 (us)", publish, "p99_us", 0),
    (f"fan-out to {m} subscribers: all have it, p50 (ms)", fanout, "complete_p50_ms", 2),
    (f"fan-out to {m} subscribers: all have it, p99 (ms)", fanout, "complete_p99_ms", 2),
    (f"fan-out to {m} subscribers: server CPU per round (ms)", fanout, "server_cpu_ms_per_round", 2),
    ("1 publisher, 1 in flight, 1 subscriber: latency p50 (us)", lat, "p50_us", 0),
    ("1 publisher, 1 in flight, 1 subscriber: latency p99 (us)", lat, "p99_us", 0),
]

md = [
    "| measurement | standalone, off | standalone, on | on / off "
    "| cluster (1 node + Redis), off | cluster, on | on / off |",
    "|---|--:|--:|--:|--:|--:|--:|",
]
table = []
for name, runs, key, digits in lines:
    v = {c: median(r.get(key) for r in runs if r["label"] == c) for c in CONFIGS}
    s_ratio = ratio(v["standalone-on"], v["standalone-off"])
    c_ratio = ratio(v["cluster-on"], v["cluster-off"])
    md.append(f"| {name} | {show(v['standalone-off'], digits)} | {show(v['standalone-on'], digits)} "
              f"| {show(s_ratio, 2)} | {show(v['cluster-off'], digits)} | {show(v['cluster-on'], digits)} "
              f"| {show(c_ratio, 2)} |")
    table.append({"measurement": name, "key": key, **{c.replace("-", "_"): v[c] for c in CONFIGS},
                  "ratio_standalone_on_off": s_ratio, "ratio_cluster_on_off": c_ratio,
                  "runs": len([r for r in runs if r["label"] == "cluster-on"])})

cpu = ["", "CPU over the publish runs' measured windows, median (the node, + its Redis "
       "when clustered; the load generator), 100% = one core:", ""]
for c in CONFIGS:
    runs = [r for r in publish if r["label"] == c]
    each = [median(col) for col in zip(*(r["server_cpu_pct_each"] for r in runs))]
    cpu.append(f"- {c}: " + " + ".join(show(x, 0) + "%" for x in each)
               + f" = {show(median(r['server_cpu_pct'] for r in runs), 0)}%; "
               f"loadgen {show(median(r['loadgen_cpu_pct'] for r in runs), 0)}%")


def commandstats(setting):
    """Redis's own account of the clustered run: per command, calls and µs per call."""
    path = os.path.join(out, "logs", f"redis-cluster-{setting}-commandstats.txt")
    stats = {}
    try:
        with open(path) as f:
            for line in f:
                g = re.match(r"cmdstat_(\S+):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line)
                if g:
                    stats[g[1]] = {"calls": int(g[2]), "usec": int(g[3]), "usec_per_call": float(g[4])}
    except OSError:
        pass
    return stats


redis = {s: commandstats(s) for s in ("off", "on")}
busy = ["", "Redis time by command over the whole run (its INFO commandstats; "
        "commands with at least 1% of the calls):", ""]
for s in ("off", "on"):
    stats = redis[s]
    total = sum(v["calls"] for v in stats.values()) or 1
    top = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])
    shown = [f"{k} {v['calls']:,} calls x {v['usec_per_call']:.1f} us" for k, v in top
             if v["calls"] >= total / 100]
    busy.append(f"- cluster {s}: " + ("; ".join(shown) if shown else "-"))
summary = "\n".join(md + cpu + busy) + "\n"

meta = {
    "smoke": os.environ.get("SMOKE") == "1",
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
}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "table": table, "redis_commandstats": redis,
               "publish": publish, "fanout": fanout, "latency": lat}, f, indent=1)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(summary)
print(summary, end="")

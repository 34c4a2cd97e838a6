#!/usr/bin/env python3
"""Summarises what bench/scale.sh measured: results.json and summary.md
(printed on stdout) in RESULTS_DIR. Standard library only.

Usage: scale-report.py RESULTS_DIR
(the run's settings come from the environment: QUICK, PINNING, LOAD_BEFORE,
DROPPED and PARAMS, a JSON object, as scale.sh exports them)

Per run (one setup, cluster size and case, one repetition): each node's
msg/s and CPU use come from its load generator (`--server-pid`, over the
load generator's measured window); Redis's INFO counters, CPU 0/1 busy and
Redis's process CPU come from scale.sh's snapshots over a window inside it
(the load is paced, so rates over either window agree). Per-message figures
divide by the messages delivered in the whole cluster over the same window.
Tables show the median over repetitions.
"""
import json
import os
import statistics
import subprocess
import sys

out = sys.argv[1]
with open(os.path.join(out, "scale.jsonl")) as f:
    runs = [json.loads(line) for line in f if line.strip()]
params = json.loads(os.environ.get("PARAMS", "{}"))


def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()


def busy(c0, c1):
    """% busy of one CPU between two /proc/stat samples
    (user nice system idle iowait irq softirq steal)."""
    d = [b - a for a, b in zip(c0, c1)]
    total = sum(d)
    return 100.0 * (total - d[3] - d[4]) / total if total else None


def derive(r):
    s0, s1 = r["s0"], r["s1"]
    win = s1["t"] - s0["t"]
    tck = r["clk_tck"]
    lgs = r["loadgen"]
    node_rate = [lg["msg_per_s"] for lg in lgs]
    node_cpu = [lg["server_cpu_pct_each"][0] for lg in lgs]
    # CPU µs per delivered message, per node: (cpu% / 100) s per s / (msg per s).
    node_us = [c * 1e4 / m if c is not None and m else None for c, m in zip(node_cpu, node_rate)]
    total_rate = sum(node_rate)
    msgs = total_rate * win

    def delta(k):
        a, b = s0.get(k), s1.get(k)
        return None if a is None or b is None else b - a

    redis_cpu_s = (delta("used_cpu_sys") or 0) + (delta("used_cpu_user") or 0)
    per = lambda v: v / msgs if v is not None and msgs else None
    return {
        "setup": r["setup"], "nodes": r["nodes"], "case": r["case"], "rep": r["rep"],
        "window_s": win,
        "offered_per_node": r["rate_per_node"],
        "node_msg_per_s": node_rate,
        "node_cpu_pct": node_cpu,
        "node_cpu_us_per_msg": node_us,
        "node_lost": [lg["lost"] for lg in lgs],
        "node_skipped": [lg.get("skipped", 0) for lg in lgs],
        "node_p50_us": [lg["p50_us"] for lg in lgs],
        "node_p99_us": [lg["p99_us"] for lg in lgs],
        "loadgen_cpu_pct": [lg["loadgen_cpu_pct"] for lg in lgs],
        "cluster_msg_per_s": total_rate,
        "redis_commands_per_msg": per(delta("total_commands_processed")),
        "redis_in_bytes_per_msg": per(delta("total_net_input_bytes")),
        "redis_out_bytes_per_msg": per(delta("total_net_output_bytes")),
        "redis_cpu_us_per_msg": per(redis_cpu_s * 1e6) if r["setup"] != "standalone" else None,
        "redis_cpu_pct": 100.0 * redis_cpu_s / win,
        "redis_proc_cpu_pct": (100.0 * (s1["redis_ticks"] - s0["redis_ticks"]) / tck / win
                               if s0.get("redis_ticks") is not None else None),
        "nodes_proc_cpu_pct": [100.0 * (b - a) / tck / win
                               for a, b in zip(s0["node_ticks"], s1["node_ticks"])],
        "cpu0_busy_pct": busy(s0["cpu0"], s1["cpu0"]),
        # What the pinned servers (every node and Redis) used of CPU 0.
        "servers_cpu_pct": sum(100.0 * (b - a) / tck / win
                               for a, b in zip(s0["node_ticks"] + [s0["redis_ticks"]],
                                               s1["node_ticks"] + [s1["redis_ticks"]])),
        "cpu1_busy_pct": busy(s0["cpu1"], s1["cpu1"]),
        "pubsub": r["pubsub"],
    } | ({
        # Nodes 1..N-1: no load of their own. Their CPU over the window
        # (from /proc, scale.sh's window) per message node 0 delivered.
        "bystander_cpu_pct": [100.0 * (b - a) / tck / win
                              for a, b in zip(s0["node_ticks"][1:], s1["node_ticks"][1:])],
    } if r["case"] == "bystander" else {})


rows = [derive(r) for r in runs]


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def show(v, digits=1):
    return "-" if v is None else f"{v:,.{digits}f}"


groups = []
for r in rows:
    key = (r["setup"], r["nodes"], r["case"])
    if key not in groups:
        groups.append(key)

md = [
    "| setup | N | case | per-node msg/s (offered) | per-node CPU µs/msg, each node | mean | "
    "node CPU % each | Redis cmds/msg | Redis in B/msg | Redis out B/msg | Redis CPU µs/msg | "
    "Redis CPU % | servers' CPU 0 use % (CPU 0 busy %) | bus: channels / subscriptions |",
    "|---|--:|---|--:|---|--:|---|--:|--:|--:|--:|--:|--:|---|",
]
table = []
by_md = [
    "| N | node 0 msg/s | node 0 CPU µs/msg | bystanders' CPU % each | bystander CPU µs per node-0 message "
    "| Redis out B per node-0 msg | Redis CPU µs/msg |",
    "|--:|--:|--:|---|--:|--:|--:|",
]
for setup, n, case in groups:
    g = [r for r in rows if (r["setup"], r["nodes"], r["case"]) == (setup, n, case)]
    if case == "bystander":
        rate = med([r["node_msg_per_s"][0] for r in g])
        each = [med([r["bystander_cpu_pct"][k] for r in g]) for k in range(n - 1)]
        per = med([statistics.mean(r["bystander_cpu_pct"]) * 1e4 / r["node_msg_per_s"][0] for r in g])
        t = {"setup": setup, "nodes": n, "case": case, "runs": len(g), "node0_msg_per_s": rate,
             "node0_cpu_us_per_msg": med([r["node_cpu_us_per_msg"][0] for r in g]),
             "bystander_cpu_pct_each": each, "bystander_cpu_us_per_foreign_msg": per,
             "redis_out_bytes_per_msg": med([r["redis_out_bytes_per_msg"] for r in g]),
             "redis_cpu_us_per_msg": med([r["redis_cpu_us_per_msg"] for r in g]),
             "servers_cpu_max_pct": max(r["servers_cpu_pct"] for r in g),
             "cpu0_busy_pct": med([r["cpu0_busy_pct"] for r in g]),
             "cpu0_busy_max_pct": max((r["cpu0_busy_pct"] or 0) for r in g),
             "lost": sum(sum(r["node_lost"]) for r in g),
             "skipped": sum(sum(r["node_skipped"]) for r in g), "pubsub": g[-1]["pubsub"]}
        table.append(t)
        by_md.append(f"| {n} | {show(rate, 0)} | {show(t['node0_cpu_us_per_msg'], 2)} | "
                     + " / ".join(show(c, 2) for c in each)
                     + f" | {show(per, 2)} | {show(t['redis_out_bytes_per_msg'], 0)} "
                     f"| {show(t['redis_cpu_us_per_msg'], 2)} |")
        continue
    each_us = [med([r["node_cpu_us_per_msg"][k] for r in g]) for k in range(n)]
    each_cpu = [med([r["node_cpu_pct"][k] for r in g]) for k in range(n)]
    rate = med([statistics.mean(r["node_msg_per_s"]) for r in g])
    mean_us = med([statistics.mean([u for u in r["node_cpu_us_per_msg"] if u is not None] or [0]) for r in g])
    t = {
        "setup": setup, "nodes": n, "case": case, "runs": len(g),
        "per_node_msg_per_s": rate, "offered_per_node": g[0]["offered_per_node"],
        "node_cpu_us_per_msg_each": each_us, "node_cpu_us_per_msg_mean": mean_us,
        "node_cpu_pct_each": each_cpu,
        "redis_commands_per_msg": med([r["redis_commands_per_msg"] for r in g]),
        "redis_in_bytes_per_msg": med([r["redis_in_bytes_per_msg"] for r in g]),
        "redis_out_bytes_per_msg": med([r["redis_out_bytes_per_msg"] for r in g]),
        "redis_cpu_us_per_msg": med([r["redis_cpu_us_per_msg"] for r in g]),
        "redis_cpu_pct": med([r["redis_cpu_pct"] for r in g]),
        "cpu0_busy_pct": med([r["cpu0_busy_pct"] for r in g]),
        "servers_cpu_pct": med([r["servers_cpu_pct"] for r in g]),
        "servers_cpu_max_pct": max(r["servers_cpu_pct"] for r in g),
        "cpu0_busy_max_pct": max((r["cpu0_busy_pct"] or 0) for r in g),
        "lost": sum(sum(r["node_lost"]) for r in g),
        "skipped": sum(sum(r["node_skipped"]) for r in g),
        "p99_us_max": max(max(r["node_p99_us"]) for r in g),
        "pubsub": g[-1]["pubsub"],
    }
    table.append(t)
    ps = t["pubsub"]
    md.append(
        f"| {setup} | {n} | {case} | {show(rate, 0)} ({t['offered_per_node']:,}) | "
        + " / ".join(show(u, 2) for u in each_us) + f" | {show(mean_us, 2)} | "
        + " / ".join(show(c, 1) for c in each_cpu)
        + f" | {show(t['redis_commands_per_msg'], 2)} | {show(t['redis_in_bytes_per_msg'], 0)} "
        f"| {show(t['redis_out_bytes_per_msg'], 0)} | {show(t['redis_cpu_us_per_msg'], 2)} "
        f"| {show(t['redis_cpu_pct'], 1)} | {show(t['servers_cpu_pct'], 0)} ({show(t['cpu0_busy_pct'], 0)}) "
        f"| {ps['channels']} / {ps['subscriptions']} |")

notes = [""]
if len(by_md) > 2:
    notes += ["", "Bystanders: only node 0 has load; the other nodes have no member of any channel "
              "(their CPU over the same window, from /proc):", ""] + by_md + [""]
base = next((t for t in table if t["setup"] == "cluster" and t["case"] == "local"), None)
for t in table:
    if base and t["setup"] == "cluster" and t["case"] == "local" and t is not base:
        notes.append(f"- local traffic, {t['nodes']} nodes: per-node CPU per message "
                     f"{show(t['node_cpu_us_per_msg_mean'], 2)} µs = "
                     f"{show(t['node_cpu_us_per_msg_mean'] / base['node_cpu_us_per_msg_mean'], 2)}x "
                     f"the {base['nodes']}-node figure; Redis out bytes per message "
                     f"{show(t['redis_out_bytes_per_msg'] / base['redis_out_bytes_per_msg'], 2)}x.")
        # Each node delivers its own R msg/s and (old routing) also receives
        # the other N-1 nodes' R frames/s each: what those cost it, per frame.
        extra = t["node_cpu_us_per_msg_mean"] - base["node_cpu_us_per_msg_mean"]
        per_frame = extra / (t["nodes"] - base["nodes"])
        t["extra_us_per_foreign_frame"] = per_frame
        if per_frame > 0:
            notes.append(f"  - if every node receives every other node's frames: {show(per_frame, 2)} µs "
                         "of node CPU per frame from another node that had no recipient here "
                         f"({show(extra, 2)} µs more per own message, {t['nodes'] - base['nodes']} "
                         "more frames per own message than with 1 node)")
        else:
            notes.append("  - no increase over the 1-node figure: within the run-to-run noise "
                         "(the bystander case measures the foreign-frame cost directly)")
sat = [t for t in table if t["servers_cpu_max_pct"] >= 90]
notes.append(
    "- CPU 0: the servers (every node and Redis) "
    + ("**used >= 90 % of it in: " + ", ".join(f"{t['setup']} N={t['nodes']} {t['case']}" for t in sat)
       + "**: saturated; figures there are not per-message costs at a fixed load" if sat else
       f"used at most {show(max(t['servers_cpu_max_pct'] for t in table), 0)} % of it: not saturated by them")
    + f"; CPU 0 was busy {show(min(t['cpu0_busy_pct'] for t in table), 0)}-"
    f"{show(max(t['cpu0_busy_max_pct'] for t in table), 0)} % in all (other processes on the machine included: "
    "where that is near 100 %, the servers shared the core with them, which costs latency, "
    "not CPU time per message).")
bad = [t for t in table if t["lost"] or t["skipped"]]
if bad:
    notes.append("- the offered load was not met (messages lost or sends skipped) in: "
                 + ", ".join(f"{t['setup']} N={t['nodes']} {t['case']} (lost {t['lost']}, skipped {t['skipped']})"
                             for t in bad))
else:
    notes.append("- every node delivered its offered load (no message lost, no paced send skipped).")
summary = "\n".join(md + notes) + "\n"

meta = {
    "quick": os.environ.get("QUICK") == "1",
    "nproc": os.cpu_count(),
    "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
    "kernel": os.uname().release,
    "pinning": os.environ.get("PINNING", ""),
    "rustc": sh("rustc --version"),
    "redis": sh("redis-server --version"),
    "commit": sh("git -C '%s' rev-parse --short HEAD" % os.path.dirname(os.path.abspath(__file__))),
    "date": sh("date -u +%Y-%m-%dT%H:%M:%SZ"),
    "loadavg_before": os.environ.get("LOAD_BEFORE", ""),
    "loadavg_after": sh("cut -d' ' -f1-3 /proc/loadavg"),
    "params": params,
    "dropped_frames": os.environ.get("DROPPED", "").splitlines(),
}
with open(os.path.join(out, "results.json"), "w") as f:
    json.dump({"meta": meta, "table": table, "runs": rows}, f, indent=1)
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(summary)
print(summary, end="")

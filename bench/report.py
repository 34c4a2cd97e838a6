#!/usr/bin/env python3
"""Turns the JSON lines that bench/run.sh collected into results.json, CSV files
and a Markdown summary (printed on stdout). Standard library only.

Usage: report.py RESULTS_DIR [--gnuplot]   (--gnuplot prints a gnuplot script
that draws the two plots instead of the summary)
"""
import csv
import json
import math
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name + ".jsonl")
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    return rows


meta = {}
if os.path.exists(os.path.join(out, "meta.json")):
    meta = json.load(open(os.path.join(out, "meta.json")))
echo, lat, conn, bcast, idle, calls = (load(n) for n in ("echo", "latency", "connect", "broadcast", "idle", "calls"))
hook_calls = [r for r in calls if r.get("mode") == "hook_call"]
instantiations = [r for r in calls if r.get("mode") == "instantiate"]


def fmt(v, digits=0):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def write_csv(name, rows, cols):
    with open(os.path.join(out, name + ".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([r.get(c) for c in cols])


ORDER = ["wsgate-rust", "bare-echo", "node-ws", "bun", "wsgate-py", "wsgate-js"]
# The peers every server is compared with: echo label, broadcast label, name.
PEERS = [("bare-echo", "bare-broadcast", "bare"), ("node-ws", "node-broadcast", "node"), ("bun", "bun-broadcast", "bun")]


def order(label):
    return ORDER.index(label) if label in ORDER else len(ORDER)


def per_cpu(r, key="msg_per_s"):
    """Messages per CPU-second of the server: robust against a shared, busy machine."""
    c = r.get("server_cpu_pct")
    return r[key] / (c / 100.0) if c else None


bare_by_c = {r["connections"]: r for r in echo if r["label"] == "bare-echo"}
for r in echo:
    r["msg_per_server_cpu_s"] = per_cpu(r)
for r in echo:
    b = bare_by_c.get(r["connections"])
    r["ratio_vs_bare"] = r["msg_per_s"] / b["msg_per_s"] if b else None
    r["cpu_ratio_vs_bare"] = (r["msg_per_server_cpu_s"] / b["msg_per_server_cpu_s"]
                              if b and r["msg_per_server_cpu_s"] and b.get("msg_per_server_cpu_s") else None)
for peer, _, short in PEERS:
    by_c = {r["connections"]: r for r in echo if r["label"] == peer}
    for r in echo:
        b = by_c.get(r["connections"])
        r[f"ratio_vs_{short}"] = r["msg_per_s"] / b["msg_per_s"] if b else None
        r[f"cpu_ratio_vs_{short}"] = (r["msg_per_server_cpu_s"] / b["msg_per_server_cpu_s"]
                                      if b and r["msg_per_server_cpu_s"] and b.get("msg_per_server_cpu_s") else None)
bare_lat = next((r for r in lat if r["label"] == "bare-echo"), None)
for r in lat:
    r["added_p50_us"] = r["p50_us"] - bare_lat["p50_us"] if bare_lat else None
    r["ratio_vs_bare"] = r["msg_per_s"] / bare_lat["msg_per_s"] if bare_lat else None
bare_conn = next((r for r in conn if r["label"] == "bare-echo"), None)
for r in conn:
    r["ratio_vs_bare"] = r["conn_per_s"] / bare_conn["conn_per_s"] if bare_conn else None

echo.sort(key=lambda r: (order(r["label"]), r["connections"]))
idle.sort(key=lambda r: (order(r["label"]), r["connections"]))

if "--gnuplot" in sys.argv:
    # Two PNGs from inline data; used only when matplotlib is not available.
    def series(rows, x, y):
        labels = sorted({r["label"] for r in rows}, key=order)
        return labels, {l: [(r[x], r[y]) for r in rows if r["label"] == l] for l in labels}

    for fname, rows, x, y, title, ylabel in (
        ("throughput.png", echo, "connections", "msg_per_s", "Echo throughput (16 in flight per connection)", "messages/s"),
        ("memory.png", idle, "connections", "rss_after_kib", "Server RSS with idle connections", "RSS (KiB)"),
    ):
        if not rows:
            continue
        labels, data = series(rows, x, y)
        print(f"set terminal pngcairo size 900,560\nset output '{os.path.join(out, fname)}'")
        print(f"set title '{title}'\nset xlabel 'connections'\nset ylabel '{ylabel}'\nset logscale x\nset key left top\nset grid")
        print("plot " + ", ".join(f"'-' with linespoints title '{l}'" for l in labels))
        for l in labels:
            for a, b in data[l]:
                print(a, b)
            print("e")
    sys.exit(0)

write_csv("echo", echo, ["label", "connections", "inflight", "size", "msg_per_s", "ratio_vs_bare", "p50_us", "p99_us", "p999_us", "server_cpu_pct", "loadgen_cpu_pct", "msg_per_server_cpu_s", "cpu_ratio_vs_bare", "ratio_vs_node", "ratio_vs_bun", "cpu_ratio_vs_node", "cpu_ratio_vs_bun", "lost", "errors"])
write_csv("latency", lat, ["label", "msg_per_s", "p50_us", "p99_us", "p999_us", "added_p50_us", "ratio_vs_bare", "server_cpu_pct", "loadgen_cpu_pct"])
write_csv("connect", conn, ["label", "concurrency", "connections", "conn_per_s", "ratio_vs_bare", "p50_us", "p99_us", "failed"])
BORDER = ["wsgate-chat", "wsgate-fanout", "bare-broadcast", "node-broadcast", "bun-broadcast"]
bcast.sort(key=lambda r: (r["subscribers"], BORDER.index(r["label"]) if r["label"] in BORDER else 9))
for r in bcast:
    # The load generator's CPU per round against the mean time until all had it:
    # near 100 %, the clients (one thread on one CPU) were the limit, not the server.
    lg_ms, mean = r.get("loadgen_cpu_ms_per_round"), r.get("complete_mean_ms")
    r["loadgen_busy_pct"] = 100 * lg_ms / mean if lg_ms is not None and mean else None
for _, peer, short in PEERS:
    by_m = {r["subscribers"]: r for r in bcast if r["label"] == peer}
    for r in bcast:
        b = by_m.get(r["subscribers"])
        r[f"p50_ratio_vs_{short}"] = (r["complete_p50_ms"] / b["complete_p50_ms"]
                                      if b and b.get("complete_p50_ms") and r.get("complete_p50_ms") is not None else None)
        r[f"cpu_ratio_vs_{short}"] = (r["deliveries_per_server_cpu_s"] / b["deliveries_per_server_cpu_s"]
                                      if b and b.get("deliveries_per_server_cpu_s") and r.get("deliveries_per_server_cpu_s") else None)
write_csv("broadcast", bcast, ["label", "subscribers", "rounds", "complete_rounds", "complete_p50_ms", "complete_p99_ms", "complete_max_ms", "delivery_p50_ms", "delivery_p99_ms", "missing", "connect_s", "settle_s", "messages_before_rounds", "complete_mean_ms", "server_cpu_ms_per_round", "loadgen_cpu_ms_per_round", "loadgen_busy_pct", "deliveries_per_server_cpu_s", "p50_ratio_vs_bare", "p50_ratio_vs_node", "p50_ratio_vs_bun", "cpu_ratio_vs_bare", "cpu_ratio_vs_node", "cpu_ratio_vs_bun"])
write_csv("idle", idle, ["label", "processes", "connections", "rss_before_kib", "rss_after_kib", "kib_per_conn"])
json.dump({"meta": meta, "echo": echo, "latency": lat, "connect": conn, "broadcast": bcast, "idle": idle,
           "hook_calls": hook_calls, "instantiations": instantiations},
          open(os.path.join(out, "results.json"), "w"), indent=1)

p = print
p(f"## Results{' (quick)' if meta.get('quick') else ''}\n")
if meta:
    p(f"Machine: {meta.get('nproc')} CPUs, {meta.get('cpu')}, Linux {meta.get('kernel')}; pinning: {meta.get('pinning')}; "
      f"{meta.get('rustc')}, node {meta.get('node')}, bun {meta.get('bun') or '-'}; {meta.get('date')}\n")
    for n in meta.get("notes", []):
        p(f"Note: {n}\n")
if echo:
    e = meta.get("echo", {})
    p(f"### Echo throughput ({e.get('inflight', 16)} messages in flight per connection, {e.get('size', 32)} B binary, "
      f"{e.get('duration_s')} s after {e.get('warmup_s')} s warm-up)\n")
    p("| server | connections | msg/s | x bare | p50 µs | p99 µs | server CPU % | loadgen CPU % | msg per server CPU-s | x bare | errors |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in echo:
        p(f"| {r['label']} | {r['connections']} | {fmt(r['msg_per_s'])} | {fmt(r['ratio_vs_bare'], 2)} | "
          f"{fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {fmt(r.get('server_cpu_pct'))} | {fmt(r.get('loadgen_cpu_pct'))} | "
          f"{fmt(r.get('msg_per_server_cpu_s'))} | {fmt(r.get('cpu_ratio_vs_bare'), 2)} | {r['errors'] + r['lost']} |")
    p("\n(server CPU % below 100 means the server was not saturated: the load generator, or other work on this")
    p("shared machine, was the limit; 'msg per server CPU-s' is the cost measure that survives that.)\n")
    if any(r["label"] in ("node-ws", "bun") for r in echo):
        p("#### Echo against the peers (x = this server's figure over the peer's at the same connection count)\n")
        p("| server | connections | msg/s | x bare | x node | x bun | msg per server CPU-s | x bare | x node | x bun |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in echo:
            p(f"| {r['label']} | {r['connections']} | {fmt(r['msg_per_s'])} | {fmt(r['ratio_vs_bare'], 2)} | "
              f"{fmt(r.get('ratio_vs_node'), 2)} | {fmt(r.get('ratio_vs_bun'), 2)} | {fmt(r.get('msg_per_server_cpu_s'))} | "
              f"{fmt(r.get('cpu_ratio_vs_bare'), 2)} | {fmt(r.get('cpu_ratio_vs_node'), 2)} | {fmt(r.get('cpu_ratio_vs_bun'), 2)} |")
        p()
    p()
if lat:
    p("### Latency, one connection, one message in flight (closed loop)\n")
    p("| server | msg/s | p50 µs | p99 µs | added p50 vs bare µs | server CPU % |")
    p("|---|---:|---:|---:|---:|---:|")
    for r in sorted(lat, key=lambda r: order(r["label"])):
        p(f"| {r['label']} | {fmt(r['msg_per_s'])} | {fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {fmt(r['added_p50_us'], 1)} | "
          f"{fmt(r.get('server_cpu_pct'))} |")
    p()
if conn:
    p("### Connection rate (32 workers: connect, handshake, close)\n")
    p("| server | conn/s | x bare | handshake p50 µs | p99 µs | failed |")
    p("|---|---:|---:|---:|---:|---:|")
    for r in sorted(conn, key=lambda r: order(r["label"])):
        p(f"| {r['label']} | {fmt(r['conn_per_s'])} | {fmt(r['ratio_vs_bare'], 2)} | {fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {r['failed']} |")
    p()
if bcast:
    p("### Broadcast fan-out (one publish, until every subscriber has it; wsgate-chat = chat example, wsgate-fanout = bench/fanout-plugin, "
      "bare-broadcast = no Wasm, node-broadcast = Node ws, bun-broadcast = Bun's uWS pub/sub)\n")
    p("| server | subscribers | rounds | all-delivered p50 ms | p99 ms | max ms | per-delivery p50 ms | p99 ms | missing | join storm: msgs, s |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in bcast:
        p(f"| {r['label']} | {r['subscribers']} | {r['complete_rounds']}/{r['rounds']} | {fmt(r['complete_p50_ms'], 2)} | {fmt(r['complete_p99_ms'], 2)} | "
          f"{fmt(r['complete_max_ms'], 2)} | {fmt(r['delivery_p50_ms'], 2)} | {fmt(r['delivery_p99_ms'], 2)} | {r['missing']} | "
          f"{fmt(r['messages_before_rounds'])}, {fmt(r['connect_s'] + r['settle_s'], 1)} |")
    p()
    if any(r.get("server_cpu_ms_per_round") is not None for r in bcast):
        p("#### Fan-out cost: CPU per round (one publish to every subscriber) and against the peers\n")
        p("| server | subscribers | all-delivered p50 ms | x bare | x node | x bun | server CPU ms/round | deliveries per server CPU-s | x bare | x node | x bun | loadgen CPU ms/round | loadgen busy % |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in bcast:
            p(f"| {r['label']} | {r['subscribers']} | {fmt(r['complete_p50_ms'], 2)} | {fmt(r.get('p50_ratio_vs_bare'), 2)} | "
              f"{fmt(r.get('p50_ratio_vs_node'), 2)} | {fmt(r.get('p50_ratio_vs_bun'), 2)} | {fmt(r.get('server_cpu_ms_per_round'), 2)} | "
              f"{fmt(r.get('deliveries_per_server_cpu_s'))} | {fmt(r.get('cpu_ratio_vs_bare'), 2)} | {fmt(r.get('cpu_ratio_vs_node'), 2)} | "
              f"{fmt(r.get('cpu_ratio_vs_bun'), 2)} | {fmt(r.get('loadgen_cpu_ms_per_round'), 2)} | {fmt(r.get('loadgen_busy_pct'))} |")
        p("\n(x for the p50 is this server's time over the peer's: below 1 is faster. 'loadgen busy %' is the load")
        p("generator's CPU per round over the mean all-delivered time: near 100 the clients, one thread on CPU 1, were")
        p("the limit rather than the server; the server's CPU per delivery is the cost measure that survives that.)")
        p()
if idle:
    p("### Memory: server RSS with idle connections\n")
    p("| server | processes | connections | RSS before MiB | RSS after MiB | KiB per connection |")
    p("|---|---:|---:|---:|---:|---:|")
    for r in idle:
        p(f"| {r['label']} | {r.get('processes', 1)} | {r['connections']} | {fmt(r['rss_before_kib'] / 1024, 1)} | "
          f"{fmt(r['rss_after_kib'] / 1024, 1)} | {fmt(r['kib_per_conn'], 2)} |")
    if any(r.get("processes", 1) > 1 for r in idle):
        p("\n(more than one process: wsgate processes sharing one port with --reuse-port, because one process")
        p("may not hold that many open files here; RSS is their sum.)")
    p()

if hook_calls or instantiations:
    p("### In-process: one hook call, one instantiation (cargo bench, no network)\n")
    bare_cost = None
    b10 = bare_by_c.get(10)
    if b10 and b10.get("msg_per_server_cpu_s"):
        bare_cost = 1e6 / b10["msg_per_server_cpu_s"]
    for r in hook_calls:
        p(f"- `on-message` of {r['plugin']}: {r['direct_us']:.3f} µs per call on an instance in hand, "
          f"{r['listener_us']:.3f} µs through the Listener (instance pool, deadline, metrics), mean of {fmt(r['calls'])} calls.")
        if bare_cost:
            p(f"  bare-echo's whole cost per echoed message at 10 connections, kernel included, was {bare_cost:.3f} µs of "
              f"server CPU in this run: the hook call alone is {r['listener_us'] / bare_cost:.2f}x that, so echo through "
              f"a plugin can reach at most ~{bare_cost / (bare_cost + r['listener_us']):.2f}x bare.")
    if instantiations:
        p()
        p("| plugin | size KiB | instantiation p50 µs | p99 µs | empty store p50 µs |")
        p("|---|---:|---:|---:|---:|")
        for r in instantiations:
            p(f"| {r['plugin']} | {fmt(r['kib'])} | {fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {fmt(r['floor_p50_us'], 1)} |")
    p()

# Targets (only meaningful for a full run).
checks = []
ws = {r["connections"]: r for r in echo if r["label"] == "wsgate-rust"}
node = {r["connections"]: r for r in echo if r["label"] == "node-ws"}
if ws:
    ratios = {c: r["ratio_vs_bare"] for c, r in ws.items() if r["ratio_vs_bare"] is not None}
    if ratios:
        worst = min(ratios.values())
        checks.append(("echo via Rust plugin >= 0.85x bare (every connection count)", worst >= 0.85,
                       ", ".join(f"{c}: {v:.2f}x" for c, v in sorted(ratios.items()))))
    cr = {c: r["cpu_ratio_vs_bare"] for c, r in ws.items() if r.get("cpu_ratio_vs_bare")}
    if cr:
        checks.append(("... the same per server CPU-second", min(cr.values()) >= 0.85,
                       ", ".join(f"{c}: {v:.2f}x" for c, v in sorted(cr.items()))))
    if node:
        above = all(ws[c]["msg_per_s"] > node[c]["msg_per_s"] for c in ws if c in node)
        checks.append(("echo via Rust plugin above Node ws", above,
                       ", ".join(f"{c}: {ws[c]['msg_per_s'] / node[c]['msg_per_s']:.2f}x node" for c in sorted(ws) if c in node)))
wl = next((r for r in lat if r["label"] == "wsgate-rust"), None)
if wl and wl.get("added_p50_us") is not None:
    checks.append(("added median latency per hook call < 20 µs", wl["added_p50_us"] < 20, f"{wl['added_p50_us']:.1f} µs"))
for n in (10000, 50000):
    r = next((r for r in idle if r["label"] == "wsgate-rust" and r["connections"] == n), None)
    if r:
        checks.append((f"RSS per idle connection <= 10 KiB at {n}", r["kib_per_conn"] <= 10, f"{r['kib_per_conn']:.2f} KiB"))
r50 = next((r for r in idle if r["label"] == "wsgate-rust" and r["connections"] >= 50000), None)
big = max((r["connections"] for r in idle if r["label"] == "wsgate-rust"), default=0)
if big >= 10000:
    held = None
    if r50:
        held = f"{r50['connections']} held"
        if r50.get("processes", 1) > 1:
            held += f" by {r50['processes']} processes sharing the port (open-files limit per process)"
    checks.append(("50k concurrent connections", r50 is not None, held or f"not tried in this run (largest: {big})"))
b10 = next((r for r in bcast if r["subscribers"] >= 10000 and r["label"] == "wsgate-chat"), None) or \
    next((r for r in bcast if r["subscribers"] >= 10000 and r["label"] == "wsgate-fanout"), None)
if b10:
    checks.append((f"broadcast to 10k subscribers p99 <= 100 ms ({b10['label']})", b10["complete_p99_ms"] <= 100 and b10["missing"] == 0,
                   f"p99 {b10['complete_p99_ms']:.1f} ms"))
for r in instantiations:
    checks.append((f"instantiation from InstancePre < 100 µs ({r['plugin']})", r["p50_us"] < 100, f"p50 {r['p50_us']:.1f} µs"))
if checks:
    p("### Targets\n")
    p("| target | met | measured |")
    p("|---|---|---|")
    for name, ok, detail in checks:
        p(f"| {name} | {'yes' if ok else 'NO'} | {detail} |")
    if not instantiations:
        p("| instantiation from InstancePre < 100 µs | n/a | not measured in this run (`--only calls`) |")
    p()

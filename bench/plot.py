#!/usr/bin/env python3
"""Draws bench/results/*.png from results.json (written by report.py).
Needs matplotlib (bench/run.sh installs it into a venv under
${WSGATE_TOOL_CACHE:-$HOME/.cache/wsgate}).

Usage: plot.py RESULTS_DIR
"""
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = sys.argv[1]
res = json.load(open(os.path.join(out, "results.json")))
meta = res.get("meta", {})
machine = f"{meta.get('nproc', '?')} CPUs, {meta.get('cpu', '?')}; {meta.get('pinning', '')}"
ORDER = ["wsgate-rust", "bare-echo", "node-ws", "bun", "wsgate-py", "wsgate-js"]
STYLE = {"wsgate-rust": "o-", "bare-echo": "s--", "node-ws": "^-.", "bun": "x-.", "wsgate-py": "v:", "wsgate-js": "d:"}


def labels(rows):
    seen = sorted({r["label"] for r in rows}, key=lambda l: ORDER.index(l) if l in ORDER else 99)
    return seen


def plot(rows, y, ylabel, title, fname, scale=1.0):
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for l in labels(rows):
        pts = sorted((r["connections"], r[y] * scale) for r in rows if r["label"] == l)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], STYLE.get(l, "o-"), label=l)
    ax.set_xscale("log")
    ax.set_xlabel("connections")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, machine, fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(os.path.join(out, fname), dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.join(out, fname)}")


e = meta.get("echo", {})
plot(res["echo"], "msg_per_s", "echo messages / s",
     f"Echo throughput vs connections ({e.get('inflight', 16)} in flight each, {e.get('size', 32)} B)",
     "throughput.png")
plot(res["idle"], "rss_after_kib", "server RSS (MiB)", "Server memory vs idle connections", "memory.png",
     scale=1 / 1024)

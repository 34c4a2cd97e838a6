#!/usr/bin/env python3
"""The sizing model of docs/SCALING.md: what 10 and 100 nodes holding 1M
connections need (nodes' CPU and memory, Redis shards, bandwidth), from the
measured per-message and per-connection costs and the workload assumptions
below. Standard library only; prints markdown.

Usage: bench/scale-model.py [SCALE_RESULTS_JSON [HOLD_RESULTS_JSON [REDIS_PUBSUB_JSON]]]
(defaults: bench/results/scale/results.json, bench/results/hold/results.json,
bench/results/scale/redis-pubsub.json). Edit the assumptions here, or rerun
after bench/scale.sh with the new routing: the measured inputs are read from
the files, so the "after" figures follow from the new run.
"""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
scale_f = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results/scale/results.json")
hold_f = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "results/hold/results.json")
redis_f = sys.argv[3] if len(sys.argv) > 3 else os.path.join(HERE, "results/scale/redis-pubsub.json")

# ------------------------------------------------------------------ assumptions
CONNS = 1_000_000
NODES = [10, 100]
CHANNEL_SIZE = 50          # members per channel; each connection in one channel
PAYLOAD = 100              # bytes per message
WORKLOADS = {              # messages each connection publishes per second
    "chat: 1 msg/min per connection": 1 / 60,
    "busy: 1 msg/10 s per connection": 1 / 10,
}
PARTITIONS = 16_384        # the new routing's hashed partitions (cluster.partitions' default)
FEW_PARTITIONS = 128       # what the first cut of it used: too few to filter
NODE_UTIL = 0.5            # plan nodes' CPU to this fraction (headroom for bursts, reconnect storms)
REDIS_UTIL = 0.5           # the same for a Redis shard's one main thread
# Loaded (batched) node costs from BENCHMARKS.md's cluster section (bench/cluster.sh,
# 99k relayed msg/s on one core): the node with senders and receivers 64 % -> 6.5 µs per
# relayed message (ingest, PUBLISH, its own frame back, delivery); the node with no
# recipient 19 % -> 1.9 µs per frame it received and dropped. Split of the 6.5 µs:
# assumed half for taking in the published message and half for the delivery.
C_PUB_LOADED = 3.25
C_DEL_LOADED = 3.25
C_RX_LOADED = 1.9
KERNEL_KIB_PER_SOCKET = 4.0  # if hold.sh's slab figure is missing or implausible
WS_TCP_OVERHEAD = 2 + 52     # WebSocket header (server frames are unmasked) + TCP/IP (with timestamps)

# ------------------------------------------------------------------ measured
scale = json.load(open(scale_f))
tab = {(t["setup"], t["nodes"], t["case"]): t for t in scale["table"]}
one = tab[("cluster", 1, "local")]
c_own_lowrate = one["node_cpu_us_per_msg_mean"]
rx_fit = [t.get("extra_us_per_foreign_frame") for t in scale["table"]
          if t["setup"] == "cluster" and t["case"] == "local" and t["nodes"] > 1]
rx_fit = [x for x in rx_fit if x is not None]
c_rx_lowrate = sum(rx_fit) / len(rx_fit) if rx_fit else None
bys = [t["bystander_cpu_us_per_foreign_msg"] for t in scale["table"] if t["case"] == "bystander"]
by = sum(bys) / len(bys) if bys else None
by_rate = scale["meta"]["params"].get("bystander_rate", "?")
size_run = scale["meta"]["params"].get("size", 32)
frame_overhead = one["redis_in_bytes_per_msg"] - size_run        # PUBLISH + channel + header
out_overhead = one["redis_out_bytes_per_msg"] - one["redis_in_bytes_per_msg"]  # per receiving node, vs in

try:
    hold = json.load(open(hold_f))
    kib_conn = hold["kib_per_conn"]
    slab = hold.get("slab_kib_per_socket")
    kern = slab if slab is not None and 1.0 <= slab <= 10.0 else KERNEL_KIB_PER_SOCKET
except FileNotFoundError:
    hold, kib_conn, kern = None, 8.0, KERNEL_KIB_PER_SOCKET
try:
    rp = json.load(open(redis_f))
    r_base, r_sub = rp["fit"]["base_us"], rp["fit"]["per_subscriber_us"]
except FileNotFoundError:
    rp, r_base, r_sub = None, 1.0, 0.3


def show(v, d=0):
    return f"{v:,.{d}f}"


print("Measured inputs:\n")
rate_run = scale["meta"]["params"].get("rate_per_node", "?")
print(f"- node CPU per own relayed message at {rate_run} msg/s per node (bench/scale.sh, 1 node): "
      f"{c_own_lowrate:.1f} µs (unbatched); loaded (BENCHMARKS.md cluster): "
      f"{C_PUB_LOADED + C_DEL_LOADED:.1f} µs")
print(f"- node CPU per bus frame from another node with no local recipient: "
      + (f"{c_rx_lowrate:.1f} µs at {rate_run} msg/s (scale.sh, local case, N=2/4 vs 1)"
         if c_rx_lowrate is not None and c_rx_lowrate > 0 else
         f"not measurable in scale.sh's local case at {rate_run} msg/s (within the noise of the own-message cost)")
      + (f"; {by:.1f} µs measured on bystander nodes at {by_rate} msg/s (scale.sh)" if by else "")
      + f"; loaded {C_RX_LOADED} µs (BENCHMARKS.md)")
print(f"- bus frame: {frame_overhead:.0f} B + payload into Redis per PUBLISH, "
      f"+{out_overhead:.0f} B per copy out to a subscribed node")
print(f"- Redis CPU per PUBLISH: {r_base:.2f} µs + {r_sub:.3f} µs per receiving subscriber "
      f"(bench/redis-pubsub.sh, pipelined)")
print(f"- memory per idle connection: {kib_conn:.2f} KiB RSS (bench/hold.sh) + "
      f"{kern:.1f} KiB kernel per socket\n")

frame = frame_overhead + PAYLOAD
for wname, rate in WORKLOADS.items():
    pubs = CONNS * rate                               # PUBLISH/s cluster-wide
    deliv = pubs * (CHANNEL_SIZE - 1)                 # to clients
    channels = CONNS / CHANNEL_SIZE
    print(f"### {wname}\n")
    print(f"{show(pubs)} publishes/s, {show(deliv)} deliveries/s to clients, {show(channels)} channels "
          f"of {CHANNEL_SIZE}, {PAYLOAD} B payload.\n")
    print("| nodes | conns/node | placement | routing | bus frames in per node/s | node cores to plan "
          "| of which bus | Redis frames out/s | Redis cores | Redis shards | Redis out | node RAM |")
    print("|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|")
    for n in NODES:
        cpn = CONNS / n
        for placement in ("random", "by channel"):
            if placement == "random":
                p_member = 1 - (1 - 1 / n) ** CHANNEL_SIZE    # node has a member of a given channel
                span = n * p_member                            # nodes per channel
                ch_node = channels * p_member
            else:
                span, ch_node, p_member = 1, channels / n, 1 / n
            routings = {
                "single bus (before)": None,
                f"{FEW_PARTITIONS} partitions": FEW_PARTITIONS,
                f"{PARTITIONS:,} partitions (after)": PARTITIONS,
                "per channel": None,
            }
            for routing, parts in routings.items():
                if routing.startswith("single"):
                    f_sub = 1.0
                elif routing.startswith("per channel"):
                    f_sub = p_member
                else:
                    # A publish reaches the node if it has a member of that
                    # channel, or of any other channel in the same partition.
                    f_sub = 1 - (1 - p_member) * (1 - 1 / parts) ** ch_node
                rx = pubs * f_sub                              # frames each node receives (own included)
                k = n * f_sub                                  # subscribed nodes per PUBLISH
                node_us = (pubs / n) * C_PUB_LOADED + (deliv / n) * C_DEL_LOADED + rx * C_RX_LOADED
                node_cores = node_us / 1e6 / NODE_UTIL
                bus_cores = rx * C_RX_LOADED / 1e6 / NODE_UTIL
                redis_cores = pubs * (r_base + r_sub * k) / 1e6
                shards = max(1, math.ceil(redis_cores / REDIS_UTIL))
                if routing.startswith("single") and shards > 1:
                    shards = "1 (cannot shard: over budget)"
                redis_out = pubs * k * (frame + out_overhead)  # B/s
                ram_gib = cpn * (kib_conn + kern) / 2**20 + 0.5   # + base, plugin instances
                print(f"| {n} | {show(cpn)} | {placement} | {routing} | {show(rx)} | {node_cores:.1f} "
                      f"| {bus_cores:.1f} | {show(pubs * k)} | {redis_cores:.2f} | {shards} "
                      f"| {redis_out * 8 / 1e9:.2f} Gbit/s | {ram_gib:.1f} GiB |")
    client_bw = deliv * (PAYLOAD + WS_TCP_OVERHEAD) * 8 / 1e9
    print(f"\nClient-side egress, all nodes together: {client_bw:.2f} Gbit/s "
          f"({PAYLOAD} B + {WS_TCP_OVERHEAD} B WebSocket/TCP/IP per delivery; ingress is "
          f"{pubs * (PAYLOAD + 6 + 52) * 8 / 1e9:.3f} Gbit/s plus pongs).\n")

for parts in (FEW_PARTITIONS, PARTITIONS):
    print(f"How much of a {parts:,}-partition bus a node subscribes to, by the number of channels "
          "(or tags) it has members in (uniform hashing): " + ", ".join(
              f"{c}: {100 * (1 - (1 - 1 / parts) ** c):.1f} %" for c in (10, 50, 128, 300, 1000, 10000)) + ".\n")

"""Summarises tools/bench/snapshot's runs (result.json per run) as Markdown: medians per VM count and mode."""
import glob
import json
import os
import statistics
import sys

work = sys.argv[1]
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*", "result.json")))]


def median(values):
    return statistics.median(values) if values else float("nan")


def ms(ns):
    return ns / 1e6


print()
print("| VMs | mode | runs | downtime ms | stall ms | stall at ms (from cut) | baseline stall ms (1.5 s, no snapshot) | TCP backoff ms | disruption ms | cut skew ms | held | dropped | recorded | time to durable ms | restored runs correct |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
order = {"cow": 0, "precopy": 1, "drop": 2, "loop": 3}
groups = {}
for run in runs:
    label = run["mode"] + ("@memory" if run.get("target") == "memory" else "")
    label += f" ({run['memory_mib']} MiB VMs)" if run.get("memory_mib", 128) != 128 else ""
    groups.setdefault((run["vms"], label), []).append(run)
for (n, mode), group in sorted(
    groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1].split("+")[0], 9), kv[0][1])
):
    vms = [vm["measurements"] for run in group if "manifest" in run for vm in run["manifest"]["vms"]]

    def col(key, scale=ms):
        return f"{scale(median([v[key] for v in vms])):.1f}" if vms else "-"

    backoff = [max(0, v["stall"] - v["downtime"]) for v in vms]
    stall_at = [v["stallStartAfterCut"] for v in vms if v.get("stallStartAfterCut") is not None]
    baseline = [ns for run in group for ns in run.get("baseline", {}).values()]
    disruption = [v["downtime"] + b for v, b in zip(vms, backoff)]
    correct = sum(1 for run in group if run["restored"] == "ok")
    failures = [run["restored"] for run in group if run["restored"] != "ok"]
    note = f"{correct}/{len(group)}" + (f" ({'; '.join(f[:80] for f in failures)})" if failures else "")
    print(
        f"| {n} | {mode} | {len(group)} | {col('downtime')} | {col('stall')} | "
        f"{ms(median(stall_at)):+.1f} | {ms(median(baseline)):.1f} | "
        f"{ms(median(backoff)):.1f} | {ms(median(disruption)):.1f} | {col('cutSkew')} | "
        f"{col('held', float)} | {col('dropped', float)} | {col('recorded', float)} | {col('timeToDurable')} | {note} |"
    )

print()
print("| VMs | mode | pipeline MB/s (raw, cut → durable, median per VM) | bare zstd -1 MB/s (same stream) | ratio | peak RSS above idle, MiB (sb1 / sb2, max) |")
print("|---|---|---|---|---|---|")
for (n, mode), group in sorted(
    groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1].split("+")[0], 9), kv[0][1])
):
    pipeline = [
        vm["image"]["rawBytes"] / (vm["measurements"]["timeToDurable"] / 1e9) / 1e6
        for run in group if "manifest" in run for vm in run["manifest"]["vms"]
        if vm["measurements"]["timeToDurable"] > 0
    ]
    bare = [run["bare"][0] / (run["bare"][1] / 1e9) / 1e6 for run in group if run.get("bare") and run["bare"][1] > 0]
    rss = [run["rss"] for run in group if run.get("rss")]
    above = (
        f"{max((r[1] - r[0]) for r in rss) / 1024:.1f} / {max((r[3] - r[2]) for r in rss) / 1024:.1f}" if rss else "-"
    )
    p, b = median(pipeline), median(bare)
    print(f"| {n} | {mode} | {p:.0f} | {b:.0f} | {p / b:.2f} | {above} |")

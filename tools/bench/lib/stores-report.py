"""Summarises tools/bench/stores's runs as Markdown: per target and disk speed, each VM's disruption and time to
durable and the discrepancy between VMs (medians over repeats); slowed / full-speed ratios; restore times."""
import glob
import json
import os
import statistics
import sys

work = sys.argv[1]
runs = sorted(glob.glob(os.path.join(work, "run-*")))


def median(values):
    return statistics.median(values) if values else float("nan")


def load(run, label):
    try:
        return json.load(open(os.path.join(run, f"{label}.json")))
    except Exception:
        return None


def disruption(m):
    return m["downtime"] + max(0, m["stall"] - m["downtime"])


rows = {}
for target in ("disk", "memory"):
    for speed in ("full", "slow"):
        manifests = [m for m in (load(run, f"{target}-{speed}") for run in runs) if m]
        per_vm = {}
        gaps = []
        for m in manifests:
            durable = []
            for vm in m["vms"]:
                per_vm.setdefault(vm["name"], {"disruption": [], "durable": []})
                per_vm[vm["name"]]["disruption"].append(disruption(vm["measurements"]) / 1e6)
                per_vm[vm["name"]]["durable"].append(vm["measurements"]["timeToDurable"] / 1e6)
                durable.append(vm["measurements"]["timeToDurable"] / 1e6)
            gaps.append(max(durable) - min(durable))
        rows[(target, speed)] = (len(manifests), per_vm, median(gaps))

print()
print("| target | disks of sb2, sb3 | snapshots | disruption ms (sink / source) | time to durable ms (sink / source) | discrepancy ms |")
print("|---|---|---|---|---|---|")
for (target, speed), (count, per_vm, gap) in rows.items():
    names = sorted(per_vm)
    dis = " / ".join(f"{median(per_vm[n]['disruption']):.0f}" for n in names)
    dur = " / ".join(f"{median(per_vm[n]['durable']):.0f}" for n in names)
    print(f"| {target} | {'slowed' if speed == 'slow' else 'full speed'} | {count} | {dis} | {dur} | {gap:.0f} |")

print()
print("| target | VM | disruption slowed / full | time to durable slowed / full |")
print("|---|---|---|---|")
for target in ("disk", "memory"):
    full, slow = rows[(target, "full")][1], rows[(target, "slow")][1]
    for name in sorted(set(full) & set(slow)):
        d = median(slow[name]["disruption"]) / median(full[name]["disruption"])
        t = median(slow[name]["durable"]) / median(full[name]["durable"])
        print(f"| {target} | {name} | {d:.2f} | {t:.2f} |")


def restore_ms(run, label):
    try:
        return int(open(os.path.join(run, f"{label}.restore")).read())
    except Exception:
        return None


solo = [v for v in (restore_ms(run, "solo") for run in runs) if v]
whole = [v for v in (restore_ms(run, "pipeline") for run in runs) if v]
correct = [open(os.path.join(run, "restored")).read().strip() for run in runs if os.path.exists(os.path.join(run, "restored"))]
print()
print("| restore from memory replicas | runs | wall time ms (median) |")
print("|---|---|---|")
print(f"| one VM (VIOLIN solo) | {len(solo)} | {median(solo):.0f} |")
print(f"| whole VIOLIN (pipeline, 2 VMs on 2 peers) | {len(whole)} | {median(whole):.0f} |")
if solo and whole:
    print(f"| ratio whole / one | | {median(whole) / median(solo):.2f} |")
ok = sum(1 for c in correct if c == "ok")
print()
print(f"Restored pipeline runs correct: {ok}/{len(correct)}" + (f" ({'; '.join(c[:80] for c in correct if c != 'ok')})" if ok < len(correct) else ""))

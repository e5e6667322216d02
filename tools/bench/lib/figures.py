"""Draws the paper's figures from tools/bench/figures' runs (issue 16) and writes report.md next to them.

    figures.py OUT     OUT/fig5/*/result.json   tools/bench/snapshot, disk target, every VM count and mode
                       OUT/fig6/*/result.json   tools/bench/snapshot, 8 VMs, cow, memory target (the disk side
                                                is fig5's 8-VM cow run)
                       OUT/fig8/*/timeline.json tools/bench/workload (the swarm), per mode

Writes OUT/fig5.png, OUT/fig6.png, OUT/fig8.png and OUT/report.md. Needs python3-matplotlib (Debian's).
"""
import glob
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The VNsnap paper's Figure 5 (NEMO3D, 650 MB VMs, Gigabit Ethernet): VNsnap-memory's disruption per VM, seconds,
# and Xen live checkpointing's range over all counts.
PAPER_VNSNAP_MEMORY_S = {2: 0.0, 4: 0.8, 8: 1.4, 16: 3.8}
PAPER_XEN_S = (10.0, 35.0)
MODES = ["cow", "precopy", "drop", "loop"]
COLOURS = {"cow": "#1b9e77", "precopy": "#7570b3", "drop": "#d95f02", "loop": "#e7298a", "none": "#666666"}


def runs(directory):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(directory, "*", "result.json")))]


def per_vm(run):
    """(name, downtime ms, TCP backoff ms, time to durable ms) of every VM of a run."""
    out = []
    for vm in run.get("manifest", {}).get("vms", []):
        m = vm["measurements"]
        backoff = max(0, m["stall"] - m["downtime"])
        out.append((vm["name"], m["downtime"] / 1e6, backoff / 1e6, m["timeToDurable"] / 1e6))
    return out


def mean(values):
    return statistics.fmean(values) if values else float("nan")


def figure5(out, fig5):
    groups = {}
    for run in fig5:
        groups.setdefault((run["vms"], run["mode"]), []).append(run)
    counts = sorted({n for n, _ in groups})
    rows = []
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.15
    for gi, n in enumerate(counts):
        for mi, mode in enumerate(MODES + ["paper"]):
            x = gi + (mi - 2) * width
            if mode == "paper":
                s = PAPER_VNSNAP_MEMORY_S.get(n)
                if s is not None:
                    # A zero cannot be drawn on a log axis: 1 ms stands for the paper's 0.0 s.
                    ax.bar(x, max(s * 1000, 1), width, color="white", edgecolor="black", hatch="//",
                           label="VNsnap-memory (paper)" if gi == 0 else None)
                    ax.text(x, max(s * 1000, 1) * 1.15, f"{s:.1f} s", ha="center", fontsize=7)
                continue
            group = groups.get((n, mode), [])
            vms = [v for run in group for v in per_vm(run)]
            if not vms:
                continue
            down, back = mean([v[1] for v in vms]), mean([v[2] for v in vms])
            correct = sum(1 for run in group if run["restored"] == "ok")
            ax.bar(x, down, width, color=COLOURS[mode], label=f"{mode}: downtime" if gi == 0 else None)
            ax.bar(x, back, width, bottom=down, color=COLOURS[mode], alpha=0.45,
                   label=f"{mode}: TCP backoff" if gi == 0 else None)
            ax.text(x, (down + back) * 1.15, f"{down + back:.0f}\n{'✓' if correct == len(group) else '✗'}",
                    ha="center", fontsize=7)
            # A snapshot's skew: its latest VM cut after its earliest (each VM records its own offset).
            skew = mean([max(v["measurements"]["cutSkew"] for v in run["manifest"]["vms"]) / 1e6
                         for run in group if "manifest" in run])
            rows.append((n, mode, down, back, down + back, skew, f"{correct}/{len(group)}"))
    ax.axhspan(PAPER_XEN_S[0] * 1000, PAPER_XEN_S[1] * 1000, color="grey", alpha=0.15,
               label="Xen live checkpointing (paper): 10–35 s")
    ax.set_yscale("log")
    ax.set_ylim(1, 60_000)
    ax.set_xticks(range(len(counts)))
    ax.set_xticklabels([f"{n} VMs" for n in counts])
    ax.set_ylabel("per-VM disruption, ms (log): downtime + TCP backoff, mean of the VMs")
    ax.set_title("Figure 5: disruption per VM (our modes, this machine, QEMU TCG) vs the VNsnap paper")
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig5.png"), dpi=120)
    plt.close(fig)
    return rows


def figure6(out, fig5, fig6):
    disk = next((r for r in fig5 if r["vms"] == 8 and r["mode"] == "cow" and "manifest" in r), None)
    memory = next((r for r in fig6 if r["vms"] == 8 and r["mode"] == "cow" and "manifest" in r), None)
    if not disk or not memory:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    sides = {"disk": per_vm(disk), "memory (1 replica)": per_vm(memory)}
    for i, (label, vms) in enumerate(sides.items()):
        names = [v[0] for v in vms]
        xs = [j + (i - 0.5) * 0.38 for j in range(len(vms))]
        left.bar(xs, [v[3] for v in vms], 0.38, label=label)
        right.bar(xs, [v[1] for v in vms], 0.38, label=f"{label}: downtime")
        right.bar(xs, [v[2] for v in vms], 0.38, bottom=[v[1] for v in vms], alpha=0.45, label=f"{label}: backoff")
        left.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        right.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
    left.set_ylabel("time from cut to durable, ms")
    left.set_title("time to durable per VM, 8 VMs, cow")
    right.set_ylabel("ms")
    right.set_title("downtime + TCP backoff per VM")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig6.png"), dpi=120)
    plt.close(fig)
    rows = []
    for label, vms in sides.items():
        durable = [v[3] for v in vms]
        rows.append((label, min(durable), max(durable), max(durable) - min(durable), mean([v[1] + v[2] for v in vms])))
    return rows


def figure8(out, directory):
    timelines = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(directory, "*", "timeline.json")))]
    if not timelines:
        return False
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for t in timelines:
        colour = COLOURS.get(t["mode"], "black")
        xs = [s[0] for s in t["samples"]]
        ys = [s[1] for s in t["samples"]]
        ax.plot(xs, ys, color=colour, label=f"{t['mode']} ({' '.join(t['verdicts'])})", linewidth=1.2)
        for snap in t["snapshots"]:
            ax.axvspan(snap["start"], snap["end"], color=colour, alpha=0.15)
            ax.axvline(snap["start"], color=colour, linestyle=":", linewidth=0.8)
    ax.set_xlabel("seconds since every downloader started")
    ax.set_ylabel("pieces held by the 3 downloaders")
    ax.set_title("Figure 8: the swarm's progress with snapshots (shaded: from snapshot asked to committed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig8.png"), dpi=120)
    plt.close(fig)
    return True


def main():
    out = sys.argv[1]
    fig5, fig6 = runs(os.path.join(out, "fig5")), runs(os.path.join(out, "fig6"))
    lines = ["# Figures (issue 16)", ""]
    rows = figure5(out, fig5)
    lines += ["## Figure 5: disruption per VM, 2–16 VMs", "", "![Figure 5](fig5.png)", "",
              "| VMs | mode | downtime ms | TCP backoff ms | disruption ms (mean per VM) | cut skew ms (latest VM) | restored runs correct | VNsnap-memory (paper) | ratio |",
              "|---|---|---|---|---|---|---|---|---|"]
    for n, mode, down, back, total, skew, correct in rows:
        paper = PAPER_VNSNAP_MEMORY_S.get(n)
        ratio = f"{paper * 1000 / total:.0f}× lower" if paper and total > 0 else "-"
        lines.append(f"| {n} | {mode} | {down:.1f} | {back:.1f} | {total:.1f} | {skew:.1f} | {correct} | {paper} s | {ratio} |")
    six = figure6(out, fig5, fig6)
    lines += ["", "## Figure 6: time to durable per VM, disk vs memory target (8 VMs, cow)", ""]
    if six:
        lines += ["![Figure 6](fig6.png)", "", "| target | fastest VM ms | slowest VM ms | spread ms | disruption ms (mean per VM) |", "|---|---|---|---|---|"]
        lines += [f"| {label} | {lo:.0f} | {hi:.0f} | {spread:.0f} | {dis:.1f} |" for label, lo, hi, spread, dis in six]
    else:
        lines.append("(no 8-VM cow runs on both targets)")
    lines += ["", "## Figure 8: the swarm's progress over time, snapshotted repeatedly", ""]
    lines.append("![Figure 8](fig8.png)" if figure8(out, os.path.join(out, "fig8")) else "(no workload runs)")
    open(os.path.join(out, "report.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Summarises tools/bench/workload's runs (timeline.json per mode) as Markdown: the swarm's progress rate over
the whole run and in the 3 s after each snapshot began, next to the run without snapshots in the same window."""
import glob
import json
import os
import sys

WINDOW = 3.0


def load(work):
    return {t["mode"]: t for t in (json.load(open(p)) for p in sorted(glob.glob(os.path.join(work, "*", "timeline.json"))))}


def at(samples, t):
    """Pieces held by all downloaders at time t (the last sample at or before it)."""
    value = 0
    for when, total in samples:
        if when > t:
            break
        value = total
    return value


def rate(samples, start, end):
    return (at(samples, end) - at(samples, start)) / (end - start) if end > start else float("nan")


def finished(samples):
    """When the last piece arrived (the first sample with the final total)."""
    final = samples[-1][1] if samples else 0
    return next((t for t, total in samples if total == final), float("nan"))


def main():
    runs = load(sys.argv[1])
    base = runs.get("none")
    print()
    print("| mode | downloaders' verdicts | finished after s | pieces/s overall | snapshot (start → end, s) | pieces/s in the 3 s after it began | same window without snapshots | longest progress gap ms |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, run in runs.items():
        samples = run["samples"]
        done = finished(samples)
        overall = samples[-1][1] / done if samples and done > 0 else float("nan")
        gap = 0.0
        last_change = samples[0][0] if samples else 0.0
        for (t0, v0), (t1, v1) in zip(samples, samples[1:]):
            if v1 != v0:
                gap = max(gap, t1 - last_change)
                last_change = t1
        rows = run["snapshots"] or [None]
        for index, snap in enumerate(rows):
            head = (
                f"| {mode} | {' '.join(run['verdicts'])} | {done:.1f} | {overall:.0f} | "
                if index == 0
                else "| | | | | "
            )
            if snap is None:
                print(head + f"- | - | - | {gap * 1000:.0f} |")
                continue
            during = rate(samples, snap["start"], snap["start"] + WINDOW)
            without = rate(base["samples"], snap["start"], snap["start"] + WINDOW) if base else float("nan")
            failed = " (failed)" if snap.get("failed") else ""
            print(
                head
                + f"{snap['start']:.1f} → {snap['end']:.1f}{failed} | {during:.0f} | {without:.0f} | "
                + (f"{gap * 1000:.0f} |" if index == 0 else "|")
            )


if __name__ == "__main__":
    main()

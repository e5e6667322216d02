"""Where QEMU's vCPU threads were off their CPU during a snapshot, and why (issue 16), from
`perf record -k CLOCK_MONOTONIC -e sched:sched_switch -g -a` read back with
`perf script -F comm,tid,time,event,trace,sym` on stdin.

    vcpu-waits.py RUN-DIR      (RUN-DIR/snapshot-start and snapshot-end: CLOCK_MONOTONIC seconds)

Every switch away from a vCPU thread ("CPU n/TCG") starts an interval that ends when it is switched back in. The
interval's reason comes from how it left: preempted while runnable ("runnable: waited for a CPU"), or asleep in
a userfaultfd write fault ("userfault: waited for QEMU to save the page it wrote"), in a futex or poll (idle: the
guest halted, or the iothread lock), or elsewhere (the kernel function named). Prints, for the window from the
snapshot's start to 3 s after its end, each reason's total per vCPU and the 5 longest intervals with their
reason, and writes RUN-DIR/vcpu-waits.json.
"""
import collections
import json
import os
import re
import sys

HEADER = re.compile(r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+(?P<time>\d+\.\d+):\s+sched:sched_switch:\s+(?P<trace>.*)$")
SWITCH = re.compile(r"prev_comm=(?P<pc>.+?) prev_pid=(?P<pp>\d+) .*prev_state=(?P<ps>\S+) ==> next_comm=(?P<nc>.+?) next_pid=(?P<np>\d+)")


def reason(state, stack):
    if state.startswith("R"):
        return "runnable (waited for a CPU)"
    text = " ".join(stack)
    if "handle_userfault" in text:
        return "userfault (waited for QEMU to save the page)"
    for marker, name in (("futex", "futex (idle, or a QEMU lock)"), ("poll", "poll"), ("nanosleep", "sleep")):
        if marker in text:
            return name
    for frame in stack:
        if not frame.startswith(("__schedule", "schedule", "__traceiter", "trace_")):
            return f"other ({frame})"
    return "other"


def events(lines):
    """(time, prev tid, prev state, next tid, stack of the switch) for every sched_switch."""
    current, stack = None, []
    for line in lines:
        match = HEADER.match(line)
        if match:
            if current:
                yield current + (stack,)
            switch = SWITCH.search(match["trace"])
            current = (float(match["time"]), int(switch["pp"]), switch["ps"], int(switch["np"]), switch["pc"]) if switch else None
            stack = []
        elif current and line.strip():
            # "ADDRESS SYMBOL" or just "SYMBOL", depending on the fields asked.
            stack.append(line.split()[-1].split("+")[0])
    if current:
        yield current + (stack,)


def main():
    run = sys.argv[1]
    start = float(open(os.path.join(run, "snapshot-start")).read())
    end = float(open(os.path.join(run, "snapshot-end")).read()) + 3.0
    away = {}  # tid -> (since, reason)
    names = {}
    intervals = []
    for when, prev, state, nxt, comm, stack in events(sys.stdin):
        if "/TCG" in comm:
            names[prev] = comm
            away[prev] = (when, reason(state, stack))
        if nxt in away:
            since, why = away.pop(nxt)
            lo, hi = max(since, start), min(when, end)
            if hi > lo:
                intervals.append((hi - lo, since - start, why, names.get(nxt, str(nxt)), nxt))
    totals = collections.defaultdict(lambda: collections.defaultdict(float))
    for length, _, why, name, tid in intervals:
        totals[f"{name} [{tid}]"][why] += length
    window = end - start
    print(f"window: snapshot start to 3 s after its end, {window:.2f} s")
    for thread, reasons in sorted(totals.items()):
        parts = ", ".join(f"{why} {seconds * 1000:.0f} ms" for why, seconds in sorted(reasons.items(), key=lambda kv: -kv[1]))
        print(f"{thread}: off CPU {sum(reasons.values()) * 1000:.0f} ms of {window * 1000:.0f}: {parts}")
    print("longest intervals off CPU:")
    for length, at, why, name, tid in sorted(intervals, reverse=True)[:5]:
        print(f"  {length * 1000:.1f} ms from {at * 1000:+.0f} ms after the snapshot began: {name} [{tid}], {why}")
    json.dump(
        {"window_s": window, "totals_ms": {t: {w: s * 1000 for w, s in r.items()} for t, r in totals.items()},
         "longest": [{"ms": l * 1000, "at_ms": a * 1000, "reason": w, "thread": f"{n} [{t}]"} for l, a, w, n, t in sorted(intervals, reverse=True)[:20]]},
        open(os.path.join(run, "vcpu-waits.json"), "w"),
    )


if __name__ == "__main__":
    main()

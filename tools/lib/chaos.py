#!/usr/bin/env python3
"""The chaos runner behind tools/chaos (issue 17): 5 peers in network namespaces running a TCP pipeline and a UDP
stream, one or two faults per round drawn from a seeded generator at a random moment of a snapshot, a restore or
steady state, then the invariants of snapshots and membership checked and printed. A broken invariant prints the
seed and the round, so `tools/chaos --seed S --rounds R` reproduces it (same draws; timing may differ)."""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

HOSTS = ["c1", "c2", "c3", "c4", "c5"]
BRIDGE = "cbr"
ADDRESS = {h: f"10.97.0.{i + 1}" for i, h in enumerate(HOSTS)}
# VM -> (host, violin, kernel parameters): a TCP pipeline over three hosts and a UDP stream over two.
VMS = {
    "source": ("c1", "pipeline", "vnsnap.role=source vnsnap.ip=10.10.0.1/24 vnsnap.blocks=100000000 vnsnap.pace=20 "
               "vnsnap.progress=500 vnsnap.to=10.10.0.2:5002"),
    "relay": ("c2", "pipeline", "vnsnap.role=relay vnsnap.ip=10.10.0.2/24 vnsnap.listen=5002 vnsnap.to=10.10.0.3:5003"),
    "sink": ("c3", "pipeline", "vnsnap.role=sink vnsnap.ip=10.10.0.3/24 vnsnap.listen=5003 vnsnap.blocks=100000000 "
             "vnsnap.progress=500"),
    "udpsource": ("c4", "udp", "vnsnap.role=udpsource vnsnap.ip=10.20.0.1/24 vnsnap.to=10.20.0.2:6000 "
                  "vnsnap.count=100000000 vnsnap.pace=20"),
    "udpsink": ("c5", "udp", "vnsnap.role=udpsink vnsnap.ip=10.20.0.2/24 vnsnap.listen=6000"),
}
FAULTS = ["kill", "kill+qemu", "partition", "disk-full", "flip", "rotate-key"]
KEEP_SNAPSHOTS = 4


class Broken(Exception):
    """An invariant that did not hold."""


class Cluster:
    def __init__(self, binary, guest, work, rng):
        self.bin, self.guest, self.work, self.rng = binary, guest, work, rng
        self.pids = {}
        self.dead = set()
        self.partitioned = False
        self.filled = {}

    # --- set-up -------------------------------------------------------------------------------------------------
    def sh(self, *args, check=True, timeout=60):
        return subprocess.run(list(args), check=check, timeout=timeout, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def config(self, host):
        seeds = ", ".join(f'"{ADDRESS[h]}:7947"' for h in HOSTS if h != host)
        lines = [
            "[peer]", f'name = "{host}"', f'bind = "{ADDRESS[host]}:7946"', f'data_dir = "{self.work}/{host}/data"',
            f'control_socket = "{self.work}/{host}/control.sock"', 'roles = ["vm", "store"]', "store_capacity_mib = 512",
            "", "[cluster]", 'name = "chaos"', f'keyring = "{self.work}/{host}/keyring"',
            "", "[membership]", f'bind = "{ADDRESS[host]}:7947"', f"seeds = [{seeds}]",
            "", "[[violins]]", 'name = "pipeline"', "vni = 42", "", "[[violins]]", 'name = "udp"', "vni = 43",
        ]
        for index, (vm, (owner, violin, params)) in enumerate(sorted(VMS.items())):
            if owner != host:
                continue
            lines += ["", "[[vms]]", f'name = "{vm}"', f'violin = "{violin}"', f'mac = "52:54:00:00:09:{index + 1:02x}"',
                      "memory_mib = 128", f'kernel = "{self.guest}/vmlinuz"', f'initrd = "{self.guest}/initrd.img"',
                      f'append = "console=ttyS0 quiet panic=-1 no_timer_check {params}"', 'accel = "tcg"']
        return "\n".join(lines) + "\n"

    def create(self):
        key = self.sh(self.bin, "keygen").stdout
        self.sh("ip", "netns", "add", BRIDGE)
        self.sh("ip", "-n", BRIDGE, "link", "add", "br0", "type", "bridge")
        self.sh("ip", "-n", BRIDGE, "link", "set", "br0", "up")
        for host in HOSTS:
            directory = f"{self.work}/{host}"
            os.makedirs(f"{directory}/data", exist_ok=True)
            # Each peer's data on its own small tmpfs, so a fault can fill it.
            self.sh("mount", "-t", "tmpfs", "-o", "size=1536m", f"chaos-{host}", f"{directory}/data")
            with open(f"{directory}/keyring", "w") as f:
                f.write(key)
            with open(f"{directory}/peer.toml", "w") as f:
                f.write(self.config(host))
            self.sh("ip", "netns", "add", host)
            self.sh("ip", "link", "add", "eth0", "netns", host, "type", "veth", "peer", "name", f"v{host}", "netns", BRIDGE)
            self.sh("ip", "-n", BRIDGE, "link", "set", f"v{host}", "master", "br0", "up")
            self.sh("ip", "-n", host, "addr", "add", f"{ADDRESS[host]}/24", "dev", "eth0")
            self.sh("ip", "-n", host, "link", "set", "eth0", "up")
            self.sh("ip", "-n", host, "link", "set", "lo", "up")
            self.start(host)

    def start(self, host):
        out = open(f"{self.work}/{host}/peer.log", "a")
        proc = subprocess.Popen(["ip", "netns", "exec", host, self.bin, "run", "--config", f"{self.work}/{host}/peer.toml"],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pids[host] = proc.pid
        self.dead.discard(host)

    def namespace_pids(self, host):
        result = self.sh("ip", "netns", "pids", host, check=False)
        return [int(p) for p in result.stdout.split()]

    def destroy(self):
        for host in HOSTS:
            pid = self.pids.get(host)
            if pid and host not in self.dead:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 15
        while time.time() < deadline and any(self.namespace_pids(h) for h in HOSTS if os.path.exists(f"/run/netns/{h}")):
            time.sleep(0.3)
        for host in HOSTS:
            if os.path.exists(f"/run/netns/{host}"):
                for pid in self.namespace_pids(host):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        time.sleep(0.5)
        for host in HOSTS + [BRIDGE]:
            if os.path.exists(f"/run/netns/{host}"):
                self.sh("ip", "netns", "del", host, check=False)
            if host != BRIDGE:
                self.sh("umount", f"{self.work}/{host}/data", check=False)

    # --- talking to peers --------------------------------------------------------------------------------------
    def ctl(self, host, *args, timeout=60):
        try:
            return self.sh("ip", "netns", "exec", host, self.bin, *args, "--socket", f"{self.work}/{host}/control.sock",
                           check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def status(self, host):
        result = self.ctl(host, "status", "--json", timeout=10)
        if result is None or result.returncode != 0:
            return None
        try:
            return json.loads(result.stdout)
        except ValueError:
            return None

    def live(self):
        return [h for h in HOSTS if h not in self.dead]

    def catalog(self, host):
        """Snapshot id -> state, read from the peer's SQLite catalog (read-only)."""
        path = f"{self.work}/{host}/data/catalog.sqlite"
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            rows = db.execute("SELECT id, state FROM snapshots").fetchall()
            db.close()
            return dict(rows)
        except sqlite3.Error:
            return {}

    def rss_mib(self, host):
        try:
            with open(f"/proc/{self.pids[host]}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) // 1024
        except OSError:
            pass
        return 0

    # --- faults --------------------------------------------------------------------------------------------------
    def kill(self, host, qemus):
        os.kill(self.pids[host], signal.SIGKILL)
        self.dead.add(host)
        if qemus:
            time.sleep(0.2)
            for pid in self.namespace_pids(host):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def partition(self, group):
        others = [ADDRESS[h] for h in HOSTS if h not in group]
        for host in group:
            rules = ("table inet chaos {\n chain in { type filter hook input priority 0; ip saddr { %s } drop; }\n"
                     " chain out { type filter hook output priority 0; ip daddr { %s } drop; }\n}\n") % (
                        ", ".join(others), ", ".join(others))
            subprocess.run(["ip", "netns", "exec", host, "nft", "-f", "-"], input=rules, text=True, check=True)
        self.partitioned = True

    def heal(self):
        if self.partitioned:
            for host in HOSTS:
                self.sh("ip", "netns", "exec", host, "nft", "delete", "table", "inet", "chaos", check=False)
            self.partitioned = False
        for host, path in list(self.filled.items()):
            os.remove(path)
            del self.filled[host]
        for host in sorted(self.dead):
            self.start(host)

    def fill_disk(self, host):
        path = f"{self.work}/{host}/data/chaos-fill"
        stat = os.statvfs(f"{self.work}/{host}/data")
        free = stat.f_bavail * stat.f_frsize
        self.sh("fallocate", "-l", str(max(0, free - (1 << 20))), path, check=False)
        self.filled[host] = path

    def flip(self):
        """Flips one byte of a random stored chunk or replica; returns (snapshot id, path) or None."""
        candidates = []
        for host in HOSTS:
            for root in (f"{self.work}/{host}/data/snapshots", f"{self.work}/{host}/data/replicas"):
                for directory, _, files in os.walk(root):
                    candidates += [os.path.join(directory, f) for f in files if f.startswith("chunk-")]
        if not candidates:
            return None
        path = self.rng.choice(sorted(candidates))
        size = os.path.getsize(path)
        if size == 0:
            return None
        offset = self.rng.randrange(size)
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x5A]))
        snapshot = int(path.split("/snapshots/")[-1].split("/")[0] if "/snapshots/" in path
                       else path.split("/replicas/")[-1].split("/")[0])
        return snapshot, path


class Runner:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.cluster = Cluster(args.binary, args.guest, args.work, self.rng)
        self.terms = {}
        self.damaged = set()
        self.rss = {h: [] for h in HOSTS}
        self.restarted_at = {h: 0 for h in HOSTS}
        self.round = 0
        self.checks = 0

    def say(self, text):
        print(text, flush=True)

    def broken(self, text):
        raise Broken(f"round {self.round} (seed {self.args.seed}): {text}")

    def wait(self, seconds, condition):
        deadline = time.time() + seconds
        while time.time() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(1)
        return None

    def random_live(self):
        return self.rng.choice(sorted(self.cluster.live()))

    def committed(self, host):
        return sorted(i for i, s in self.cluster.catalog(host).items() if s == "committed")

    # --- operations ---------------------------------------------------------------------------------------------
    def start_snapshot(self, host):
        violin = self.rng.choice(["pipeline", "udp"])
        mode = self.rng.choice(["cow", "cow", "drop", "precopy"])
        target = ["--target", "memory", "--replicas", "2"] if self.rng.random() < 0.5 else ["--target", "disk"]
        args = ["ip", "netns", "exec", host, self.cluster.bin, "snapshot", violin, "--mode", mode, *target, "--json",
                "--socket", f"{self.args.work}/{host}/control.sock"]
        return f"snapshot {violin} {mode} {' '.join(target)} from {host}", subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start_restore(self, host, snapshot):
        args = ["ip", "netns", "exec", host, self.cluster.bin, "restore", str(snapshot), "--yes",
                "--socket", f"{self.args.work}/{host}/control.sock"]
        return f"restore {snapshot} from {host}", subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                                   text=True)

    def finish(self, what, proc, limit=180):
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            self.broken(f"{what} did not end within {limit} s")
        last = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1]
        self.say(f"    {what}: {'ok' if proc.returncode == 0 else 'failed: ' + last[:200]}")
        return proc.returncode == 0, out, last

    # --- faults -------------------------------------------------------------------------------------------------
    def inject(self, fault):
        c = self.cluster
        if fault in ("kill", "kill+qemu"):
            alive = sorted(c.live())
            if len(alive) <= 3:
                return "skipped (3 peers left)"
            host = self.rng.choice(alive)
            c.kill(host, fault == "kill+qemu")
            self.restarted_at[host] = self.round
            return f"kill -9 {host}" + (" and its QEMUs" if fault == "kill+qemu" else "")
        if fault == "partition":
            group = self.rng.sample(HOSTS, self.rng.choice([1, 2]))
            c.partition(group)
            return f"partition {'+'.join(sorted(group))} from the rest"
        if fault == "disk-full":
            host = self.random_live()
            c.fill_disk(host)
            return f"disk of {host} filled"
        if fault == "flip":
            flipped = c.flip()
            if flipped is None:
                return "skipped (no chunk stored yet)"
            self.damaged.add(flipped[0])
            return f"byte flipped in {flipped[1].replace(self.args.work + '/', '')}"
        if fault == "rotate-key":
            host = self.random_live()
            key = c.sh(c.bin, "keygen").stdout.strip()
            steps = []
            for verb in ("install", "use"):
                result = c.ctl(host, "keys", verb, key, timeout=60)
                steps.append(f"{verb} {'ok' if result is not None and result.returncode == 0 else 'failed'}")
            return f"key rotation from {host}: {', '.join(steps)}"
        raise ValueError(fault)

    # --- invariants ---------------------------------------------------------------------------------------------
    def check_membership(self):
        def agreed():
            views = {}
            for host in HOSTS:
                status = self.cluster.status(host)
                if status is None:
                    return None
                alive = sorted(m["name"] for m in status["membership"]["members"] if m["state"] == "alive")
                election = status["membership"]["election"]
                in_sync = all(m.get("keyringInSync", True) for m in status["membership"]["members"])
                views[host] = (tuple(alive), election.get("initiator"), election["term"], in_sync)
            if all(v[0] == tuple(HOSTS) and v[3] for v in views.values()) and len({v[1:3] for v in views.values()}) == 1:
                return views
            return None

        views = self.wait(120, agreed)
        if views is None:
            last = {h: (s["membership"]["election"] if s else None) for h in HOSTS
                    for s in [self.cluster.status(h)]}
            self.broken(f"membership, election or keyring not agreed 120 s after healing: {last}")
        _, initiator, term, _ = next(iter(views.values()))
        if self.terms.setdefault(term, initiator) != initiator:
            self.broken(f"term {term} had two initiators: {self.terms[term]} and {initiator}")
        self.checks += 1
        return f"5/5 alive, initiator {initiator} in term {term}, keyrings in sync"

    def check_catalogs(self):
        def agreed():
            catalogs = {h: self.cluster.catalog(h) for h in HOSTS}
            ids = set().union(*catalogs.values())
            conflicts = []
            for i in sorted(ids):
                states = {h: c.get(i) for h, c in catalogs.items()}
                final = {s for s in states.values() if s in ("committed", "aborted", "deleted")}
                if "committed" in final and "aborted" in final:
                    conflicts.append(f"{i}: {states}")
                elif "committed" in final and any(s is None or s == "pending" for s in states.values()):
                    conflicts.append(f"{i}: {states}")
            return ("ok", catalogs) if not conflicts else None

        result = self.wait(60, agreed)
        if result is None:
            catalogs = {h: self.cluster.catalog(h) for h in HOSTS}
            self.broken(f"catalogs disagree 60 s after healing (committed on some, aborted or missing on others): "
                        f"{catalogs}")
        catalogs = result[1]
        # No images or replicas of a snapshot every catalog has deleted (or aborted) survive a sync period.
        gone = {i for i in set().union(*catalogs.values())
                if all(c.get(i) in ("deleted", "aborted", None) for c in catalogs.values())}

        def left():
            found = []
            for host in HOSTS:
                for root in ("snapshots", "replicas"):
                    directory = f"{self.args.work}/{host}/data/{root}"
                    for name in (os.listdir(directory) if os.path.isdir(directory) else []):
                        if name.isdigit() and int(name) in gone:
                            found.append(f"{host}/{root}/{name}")
            return found

        # A store drops the replicas of a snapshot aborted for 60 s (StoreService.abortGrace), checked every 5 s,
        # counted from when it learns of the abort: a store restarted at healing learns it by catalog sync (up to
        # 15 s), and the catalogs may agree before it has.
        if self.wait(120, lambda: "ok" if not left() else None) is None:
            states = {i: {h: c.get(i) for h, c in catalogs.items()} for i in sorted(gone)}
            self.broken(f"files of deleted or aborted snapshots survive a sync period: {left()}; catalogs: {states}")
        committed = sorted(i for i, s in catalogs[HOSTS[0]].items() if s == "committed")
        self.checks += 2
        return committed

    def qemus(self):
        """VM name -> [(pid, host namespace)] of every QEMU on this machine started for the chaos cluster."""
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                netns = os.readlink(f"/proc/{pid}/ns/net")
            except OSError:
                continue
            if not argv or b"qemu-system" not in argv[0]:
                continue
            for arg in argv:
                text = arg.decode(errors="replace")
                if ",process=vnsnap-" in text and f"{self.args.work}/" in b" ".join(argv).decode(errors="replace"):
                    found.setdefault(text.split(",")[0], []).append((int(pid), netns))
        return found

    def check_vms(self):
        # Two QEMUs of one VM may be there for a while by design: a holder cut off from a restore that failed keeps
        # the copy it loaded beside the running VM until its restorer has been silent for 120 s
        # (RestoreHolder.stagedSilence), then discards it. What must not happen is two for longer.
        twice_seen = {}

        def settled():
            running = self.qemus()
            twice = {vm: p for vm, p in running.items() if len(p) > 1}
            twice_seen.clear()
            twice_seen.update(twice)
            if twice:
                return None
            known = {}
            for host in HOSTS:
                status = self.cluster.status(host)
                if status is None:
                    return None
                for vm in status["vms"]:
                    if vm.get("pid"):
                        known[vm["pid"]] = vm["name"]
            orphans = {vm: p for vm, procs in running.items() for p, _ in procs if known.get(p) != vm}
            missing = sorted(set(VMS) - set(running))
            return ("ok", running) if not orphans and not missing else None

        result = self.wait(150, settled)
        if result is None and twice_seen:
            self.broken(f"a VM runs twice, 150 s after healing: {twice_seen}")
        if result is None:
            self.broken(f"VMs not settled 150 s after healing (missing, or a QEMU no peer knows): {self.qemus()}")
        # No QEMU thread stays blocked on a write-protected page (a background snapshot left behind) with no
        # snapshot running: looked at twice, 3 s apart.
        def blocked():
            found = set()
            for vm, procs in self.qemus().items():
                for pid, _ in procs:
                    for task in os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else []:
                        try:
                            with open(f"/proc/{pid}/task/{task}/wchan") as f:
                                if f.read().strip() == "handle_userfault":
                                    found.add((vm, int(task)))
                        except OSError:
                            pass
            return found
        first = blocked()
        time.sleep(3)
        stuck = first & blocked()
        if stuck:
            self.broken(f"QEMU threads blocked on write-protected guest RAM: {sorted(stuck)}")
        self.checks += 3
        return "every VM runs once, on a peer that knows it, none hung on write-protected RAM"

    def check_rss(self):
        notes = []
        for host in HOSTS:
            # What a store keeps in RAM on purpose (replicas, up to its capacity) is not counted.
            status = self.cluster.status(host) or {}
            kept = ((status.get("store") or {}).get("usage") or {}).get("ramUsed", 0) // (1 << 20)
            self.rss[host].append(self.cluster.rss_mib(host) - kept)
            history = self.rss[host]
            # Only across rounds without a restart of this peer: growth over 5 rounds beyond 96 MiB is a leak.
            if len(history) > 5 and self.restarted_at[host] < self.round - 5 and history[-1] > history[-6] + 96:
                self.broken(f"{host}'s RSS (less its stored replicas) grew from {history[-6]} to {history[-1]} MiB "
                            f"over 5 rounds")
            notes.append(f"{host} {history[-1]}")
        self.checks += 1
        return "RSS less stored replicas, MiB: " + ", ".join(notes)

    def check_restore(self, committed):
        candidates = [i for i in committed if i not in self.damaged]
        if not candidates:
            return "no undamaged snapshot to restore"
        snapshot = self.rng.choice(candidates)
        what, proc = self.start_restore(self.random_live(), snapshot)
        ok, _, last = self.finish(what, proc)
        if not ok:
            self.broken(f"committed snapshot {snapshot} did not restore: {last}")
        self.checks += 1
        return f"snapshot {snapshot} restored (images verified against its manifest)"

    def prune(self, committed):
        for snapshot in committed[:-KEEP_SNAPSHOTS] if len(committed) > KEEP_SNAPSHOTS else []:
            result = self.cluster.ctl(self.random_live(), "delete", str(snapshot), timeout=60)
            self.say(f"    delete {snapshot}: {'ok' if result is not None and result.returncode == 0 else 'failed'}")

    # --- rounds -------------------------------------------------------------------------------------------------
    def run_round(self):
        c = self.cluster
        # The round's schedule depends only on the seed and the round (not on what earlier rounds' outcomes made the
        # other choices consume), so `--seed S --rounds R` strikes round R the same way again.
        schedule = random.Random(f"{self.args.seed}/{self.round}/schedule")
        self.rng.seed(f"{self.args.seed}/{self.round}/choices")
        faults = schedule.sample(self.args.faults, min(len(self.args.faults), schedule.choice([1, 1, 2])))
        moment = schedule.choice(["snapshot", "restore", "steady"])
        delay = round(schedule.uniform(0.0, 2.5), 2)
        self.say(f"round {self.round}: {' + '.join(faults)} during {moment}, after {delay} s")
        op = None
        committed = self.committed(HOSTS[0])
        if moment == "snapshot":
            op = self.start_snapshot(self.random_live())
        elif moment == "restore" and committed:
            op = self.start_restore(self.random_live(), self.rng.choice(committed))
        time.sleep(delay)
        for fault in faults:
            self.say(f"    fault: {self.inject(fault)}")
        if op:
            self.finish(*op)
        time.sleep(self.rng.uniform(1, 4))
        c.heal()
        self.say(f"    healed: partitions removed, disks emptied, peers restarted")
        self.say(f"    check: {self.check_membership()}")
        self.say(f"    check: {self.check_vms()}")
        committed = self.check_catalogs()
        self.say(f"    check: catalogs agree ({len(committed)} committed), no files of deleted snapshots left")
        self.say(f"    check: {self.check_restore(committed)}")
        # A snapshot in steady state, so there is always something recent to restore and to delete; once healed,
        # the cluster must be able to take one.
        what, proc = self.start_snapshot(self.random_live())
        ok, out, last = self.finish(what, proc)
        if not ok:
            self.broken(f"a snapshot after healing failed: {last}")
        self.checks += 1
        try:
            cuts = [vm["cut"] for vm in json.loads(out)["vms"]]
            first = min(c["cutAtNanoseconds"] for c in cuts)
            skew = max(c["cutAtNanoseconds"] - first for c in cuts) / 1e6
            downtime = max(c["downtimeNanoseconds"] for c in cuts) / 1e6
            self.say(f"    steady-state snapshot: {len(cuts)} VMs on {len(cuts)} peers, cut skew {skew:.1f} ms, "
                     f"longest downtime {downtime:.1f} ms")
        except (ValueError, KeyError, TypeError):
            pass
        self.prune(self.committed(HOSTS[0]))
        self.say(f"    check: {self.check_rss()}")

    def run(self):
        self.say(f"tools/chaos --seed {self.args.seed} --rounds {self.args.rounds}: 5 peers, VMs {', '.join(sorted(VMS))}")
        c = self.cluster
        try:
            c.create()
            self.say(f"    cluster: {self.check_membership()}")
            self.say(f"    cluster: {self.check_vms()}")
            for self.round in range(1, self.args.rounds + 1):
                self.run_round()
        except Broken as error:
            self.say(f"BROKEN INVARIANT: {error}")
            self.say(f"reproduce: tools/chaos --seed {self.args.seed} --rounds {self.round}")
            return 1
        except Exception as error:
            self.say(f"RUNNER ERROR in round {self.round} (seed {self.args.seed}): {error!r}")
            return 2
        finally:
            if os.environ.get("VNSNAP_CHAOS_KEEP") == "1":
                self.say(f"VNSNAP_CHAOS_KEEP=1: the cluster is left running in {self.args.work} (namespaces c1…c5)")
            else:
                c.destroy()
        self.say(f"{self.args.rounds} rounds, seed {self.args.seed}: {self.checks} invariant checks, none broken")
        return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", type=lambda text: text.split(","), default=FAULTS)
    sys.exit(Runner(parser.parse_args()).run())


if __name__ == "__main__":
    main()

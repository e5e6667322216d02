# Shared by tools/demo and tools/bench/snapshot: sourced, not run. Hosts are network namespaces named as in
# the caller's HOSTS array; each host's files are in $WORK/<host> (peer.pid, data/vms/<vm>/serial.log).

note() { printf '    %s\n' "$*"; }

# --- stopping: by pid only -------------------------------------------------------------------------

# A pid that exists and is not a zombie.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

netns_exists() { [[ -e /run/netns/$1 ]]; }

netns_pids() { netns_exists "$1" && ip netns pids "$1" 2>/dev/null || true; }

# Stops everything in the HOSTS namespaces and deletes them: SIGTERM to the peers (their pids from the work
# dir; they quit their VMs over QMP), up to 10 s for every process in the namespaces to end, then SIGKILL
# to the peers and to any pid still in them.
stop_hosts() {
    local host pid peers=() left deadline
    for host in "${HOSTS[@]}"; do
        netns_exists "$host" || continue
        pid=$(cat "$WORK/$host/peer.pid" 2>/dev/null || true)
        # Only a pid that really is inside the namespace (a stale pid file must not hit another process).
        if [[ $pid =~ ^[0-9]+$ ]] && netns_pids "$host" | grep -qx "$pid"; then peers+=("$pid"); fi
    done
    if ((${#peers[@]})); then
        note "stopping peers (SIGTERM to pid ${peers[*]})"
        kill -TERM "${peers[@]}" 2>/dev/null || true
    fi
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        left=()
        for pid in "${peers[@]}"; do if alive "$pid"; then left+=("$pid"); fi; done
        for host in "${HOSTS[@]}"; do
            for pid in $(netns_pids "$host"); do if alive "$pid"; then left+=("$pid"); fi; done
        done
        ((${#left[@]})) || break
        sleep 0.2
    done
    left=()
    for pid in "${peers[@]}"; do if alive "$pid"; then left+=("$pid"); fi; done
    for host in "${HOSTS[@]}"; do left+=($(netns_pids "$host")); done
    if ((${#left[@]})); then
        note "still running after 10 s, SIGKILL to pid ${left[*]}"
        kill -KILL "${left[@]}" 2>/dev/null || true
        sleep 0.5
    fi
    for host in "${HOSTS[@]}"; do
        if netns_exists "$host"; then
            ip netns del "$host" 2>/dev/null || note "could not delete namespace $host"
        fi
    done
}

# --- guests ------------------------------------------------------------------------------------------

serial() { echo "$WORK/$1/data/vms/$2/serial.log"; }

# The last "VNSNAP <word> blocks=K" count of a serial log (0 if none yet).
last_blocks() { # log pattern
    tr -d '\r' 2>/dev/null <"$1" | sed -n "s/^VNSNAP $2 blocks=\([0-9]*\).*/\1/p" | tail -n 1 | grep . || echo 0
}

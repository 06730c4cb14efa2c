#!/usr/bin/env bash
# Private containerd instances for tests (never the system one).
#
# Source it and call `containerd_start DIR` / `containerd_stop DIR`, or run it:
#   tests/lib/containerd.sh start DIR   # socket at DIR/containerd.sock, pid in DIR/containerd.pid
#   tests/lib/containerd.sh stop DIR    # kill tasks, stop containerd, unmount, clean runc state
#   tests/lib/containerd.sh powercut DIR # what a power cut does: every process gone, /run gone, root kept
# DIR must be short (unix socket paths are limited to 107 bytes).
# Both are idempotent. Requires root, containerd, runc and ctr.

CONTAINERD_START_TIMEOUT_S=${CONTAINERD_START_TIMEOUT_S:-10}
CONTAINERD_STOP_TIMEOUT_S=${CONTAINERD_STOP_TIMEOUT_S:-10}

_cd_log() { echo "containerd.sh: $*" >&2; }

_cd_alive() { # DIR -> 0 if the recorded containerd runs
    local pid
    [ -f "$1/containerd.pid" ] || return 1
    pid=$(cat "$1/containerd.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "containerd --config $1/config.toml"
}

containerd_start() {
    local dir=${1:?usage: containerd_start DIR}
    mkdir -p "$dir" || return 1
    dir=$(cd "$dir" && pwd) || return 1
    local sock="$dir/containerd.sock"
    if [ ${#sock} -gt 100 ]; then
        _cd_log "socket path $sock is too long (max 100 bytes): use a shorter DIR"
        return 1
    fi
    if _cd_alive "$dir" && [ -S "$sock" ]; then
        return 0
    fi
    command -v containerd >/dev/null || { _cd_log "containerd not found in PATH"; return 1; }
    mkdir -p "$dir/root" "$dir/state"
    cat >"$dir/config.toml" <<CFG
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""
CFG
    rm -f "$sock" "$sock.ttrpc"
    setsid containerd --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 </dev/null &
    echo $! >"$dir/containerd.pid"
    local deadline=$((SECONDS + CONTAINERD_START_TIMEOUT_S))
    while [ $SECONDS -lt "$deadline" ]; do
        if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null; then
            _cd_log "containerd exited during start; last log lines:"
            tail -n 20 "$dir/containerd.log" >&2
            return 1
        fi
        sleep 0.05
    done
    _cd_log "containerd did not open $sock within ${CONTAINERD_START_TIMEOUT_S}s; see $dir/containerd.log"
    return 1
}

containerd_stop() {
    local dir=${1:?usage: containerd_stop DIR}
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd) || return 1
    local sock="$dir/containerd.sock" ns id pid p i
    # Namespaces this instance used: asked from containerd when it runs, and
    # from its state dir (tasks' bundles) when it does not.
    if _cd_alive "$dir" && [ -S "$sock" ]; then
        ctr --address "$sock" namespaces ls -q >>"$dir/namespaces" 2>/dev/null
    fi
    ls "$dir/state/io.containerd.runtime.v2.task" >>"$dir/namespaces" 2>/dev/null
    local namespaces=""
    [ -f "$dir/namespaces" ] && namespaces=$(grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*$' "$dir/namespaces" | sort -u)
    if _cd_alive "$dir" && [ -S "$sock" ]; then
        for ns in $namespaces; do
            for id in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
                ctr --address "$sock" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1
            done
            for id in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
                # the kill is asynchronous: retry briefly until delete works
                for i in 1 2 3 4 5 6 7 8 9 10; do
                    ctr --address "$sock" -n "$ns" tasks delete "$id" >/dev/null 2>&1 && break
                    sleep 0.1
                done
            done
        done
    fi
    if _cd_alive "$dir"; then
        pid=$(cat "$dir/containerd.pid")
        kill -TERM "$pid" 2>/dev/null
        local deadline=$((SECONDS + CONTAINERD_STOP_TIMEOUT_S))
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then
            _cd_log "containerd $pid did not stop within ${CONTAINERD_STOP_TIMEOUT_S}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$dir/containerd.pid"
    # Shims started by this instance that outlived it (matched by its socket).
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "-address $sock "; then
            kill -KILL "${p#/proc/}" 2>/dev/null
        fi
    done
    # Containers whose shim is gone (containerd or shim crashed): runc state
    # lives under /run/containerd/runc/<ns>, whatever --state is. Namespaces
    # must be unique to this instance.
    for ns in $namespaces; do
        [ -d "/run/containerd/runc/$ns" ] || continue
        for id in $(runc --root "/run/containerd/runc/$ns" list -q 2>/dev/null); do
            runc --root "/run/containerd/runc/$ns" delete -f "$id" >/dev/null 2>&1
        done
    done
    # Leftover mounts under DIR, deepest first.
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    for ns in $namespaces; do
        rm -rf "/run/containerd/runc/$ns"
    done
    return 0
}

# What a power cut (or a reboot) leaves of this instance: SIGKILL to
# containerd, its shims and every process of its containers (matched by the
# cgroup path /NS/ID that Shoal gives each container), then everything that
# lives on tmpfs on a real device goes: mounts under the state dir, the state
# dir itself (containerd's --state, a tmpfs under /run), runc's state under
# /run/containerd/runc/NS and the containers' cgroups. containerd's root
# (container records, snapshots, images) survives, as on disk. Start it
# again with `containerd_start DIR`.
containerd_powercut() {
    local dir=${1:?usage: containerd_powercut DIR}
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd) || return 1
    local sock="$dir/containerd.sock" ns p cg namespaces
    namespaces=$(ls "$dir/state/io.containerd.runtime.v2.task" 2>/dev/null | grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*$')
    [ -f "$dir/containerd.pid" ] && kill -KILL "$(cat "$dir/containerd.pid")" 2>/dev/null
    rm -f "$dir/containerd.pid"
    for p in /proc/[0-9]*; do
        if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q -- "-address $sock "; then
            kill -KILL "${p#/proc/}" 2>/dev/null
        fi
        for ns in $namespaces; do
            if grep -q ":/$ns/" "$p/cgroup" 2>/dev/null; then
                kill -KILL "${p#/proc/}" 2>/dev/null
            fi
        done
    done
    awk -v d="$dir/state/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf "$dir/state"
    for ns in $namespaces; do
        rm -rf "/run/containerd/runc/$ns"
        # Emptied cgroups, deepest first (a killed process may take a moment to leave its cgroup).
        for cg in /sys/fs/cgroup/*/"$ns" /sys/fs/cgroup/"$ns"; do
            [ -d "$cg" ] || continue
            for p in 1 2 3 4 5 6 7 8 9 10; do
                find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
                [ -d "$cg" ] || break
                sleep 0.1
            done
        done
    done
    return 0
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
    start) containerd_start "${2:?usage: $0 start DIR}" ;;
    stop) containerd_stop "${2:?usage: $0 stop DIR}" ;;
    powercut) containerd_powercut "${2:?usage: $0 powercut DIR}" ;;
    *) echo "usage: $0 start|stop|powercut DIR" >&2; exit 2 ;;
    esac
fi

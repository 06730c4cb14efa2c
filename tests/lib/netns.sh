#!/usr/bin/env bash
# Network namespaces for multi-node tests: one namespace per node, all on one
# private bridge, nothing routed off this machine (no NAT, no default route).
#
#   tests/lib/netns.sh setup PREFIX N      # namespaces PREFIX-1..N; prints the subnet base "10.X.0"
#   tests/lib/netns.sh teardown PREFIX [N] # removes all of it (every PREFIX-* namespace); idempotent
#   tests/lib/netns.sh ip PREFIX I         # prints node I's address
#   tests/lib/netns.sh partition PREFIX I  # isolate node I from everyone
#   tests/lib/netns.sh heal PREFIX I       # undo partition
#   tests/lib/netns.sh block PREFIX I J    # drop traffic between nodes I and J only
#   tests/lib/netns.sh unblock PREFIX I J  # undo block
#
# Layout: bridge shbr<h> (h = 8 hex digits of PREFIX's checksum, so names
# stay within the kernel's 15 bytes) holds 10.X.0.254/24; node I is
# namespace PREFIX-I with eth0 = 10.X.0.I/24 (veth, host side shv<h>-I on the
# bridge) and lo up. X is derived from PREFIX and moved on past any 10.X.0.0/24
# already routed here, so concurrent runs (different PREFIXes) do not collide;
# the choice is serialised by a lock file.
#
# Partitions are iptables DROP rules inside the node's namespace (never
# touching lo): INPUT drops everything arriving, so peers see silence, as
# with a pulled cable (their TCP retransmits and times out, no RST); OUTPUT
# drops everything the node sends (its TCP connects retransmit and time out
# too; only its own ICMP/UDP sends see EPERM locally). `block` does the same
# for one peer's address on both sides.
#
# Every step is bounded and loud on failure. Requires root, iproute2 and
# iptables.

set -u

NETNS_LOCK=${NETNS_LOCK:-/run/shoal-tests-netns.lock}
NETNS_LOCK_TIMEOUT_S=${NETNS_LOCK_TIMEOUT_S:-30}
NETNS_CMD_TIMEOUT_S=${NETNS_CMD_TIMEOUT_S:-10}
NETNS_MAX_NODES=${NETNS_MAX_NODES:-99}

_nl_log() { echo "netns.sh: $*" >&2; }
_nl_die() { _nl_log "$*"; exit 1; }

# Runs a command with a bound; loud on failure.
_nl_run() {
    timeout "$NETNS_CMD_TIMEOUT_S" "$@" || { _nl_log "failed: $*"; return 1; }
}

_nl_hash() { printf '%08x' "$(printf %s "$1" | cksum | cut -d' ' -f1)"; }
_nl_bridge() { echo "shbr$(_nl_hash "$1")"; }
_nl_veth() { echo "shv$(_nl_hash "$1")-$2"; }

_nl_check_prefix() {
    [[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.]*(-[A-Za-z0-9_.]+)*$ ]] || _nl_die "bad PREFIX '$1' (letters, digits, _ . -)"
}

_nl_check_index() { # I N?
    [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$NETNS_MAX_NODES" ] || _nl_die "bad node index '$1' (1..$NETNS_MAX_NODES)"
}

# Namespaces named PREFIX-<digits>.
_nl_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$(printf %s "$1" | sed 's/[.]/\\./g')-[0-9]+$"
}

# Node I's IPv4 address, read back from its namespace.
nl_ip() {
    local prefix=$1 i=$2 a
    a=$(timeout "$NETNS_CMD_TIMEOUT_S" ip -n "$prefix-$i" -4 -o addr show dev eth0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
    [ -n "$a" ] || _nl_die "no address on eth0 in namespace $prefix-$i (was setup run?)"
    echo "$a"
}

# A free 10.X: derived from PREFIX, then the next not already routed here.
_nl_pick_subnet() {
    local h x tries
    h=$(printf %s "$1" | cksum | cut -d' ' -f1)
    x=$((h % 200 + 20))
    for tries in $(seq 1 200); do
        if ! ip -4 route show | grep -q "^10\.$x\.0\.0/24 " && ! ip -4 -o addr show | grep -q " 10\.$x\.0\."; then
            echo "$x"
            return 0
        fi
        x=$(((x - 20 + 1) % 200 + 20))
    done
    _nl_die "no free 10.X.0.0/24 subnet found"
}

nl_teardown() {
    local prefix=$1 n=${2:-0} i ns pid br
    local list
    list=$(_nl_namespaces "$prefix")
    for i in $(seq 1 "$n"); do list="$list $prefix-$i"; done
    for ns in $(printf '%s\n' $list | sort -u); do
        ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$ns" || continue
        # Anything still running in the namespace was started by this test run.
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null
        done
        _nl_run ip netns del "$ns" || return 1
    done
    br=$(_nl_bridge "$prefix")
    if ip link show "$br" >/dev/null 2>&1; then
        _nl_run ip link del "$br" || return 1
    fi
    # Host side of veths whose namespace vanished some other way.
    for v in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^shv$(_nl_hash "$prefix")-[0-9]+$"); do
        # It may vanish on its own meanwhile (the kernel removes a veth whose peer's namespace is gone).
        ip link del "$v" 2>/dev/null || ! ip link show "$v" >/dev/null 2>&1 || { echo "netns.sh: cannot delete $v" >&2; return 1; }
    done
    while iptables -w 5 -D FORWARD -i "$br" -o "$br" -j ACCEPT 2>/dev/null; do :; done
    return 0
}

nl_setup() {
    local prefix=$1 n=$2 i br x ns veth
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le "$NETNS_MAX_NODES" ] || _nl_die "bad node count '$n' (1..$NETNS_MAX_NODES)"
    br=$(_nl_bridge "$prefix")
    exec 9>"$NETNS_LOCK" || _nl_die "cannot open lock $NETNS_LOCK"
    flock -w "$NETNS_LOCK_TIMEOUT_S" 9 || _nl_die "lock $NETNS_LOCK not acquired within ${NETNS_LOCK_TIMEOUT_S}s"
    nl_teardown "$prefix" "$n" || _nl_die "could not remove leftovers of $prefix"
    x=$(_nl_pick_subnet "$prefix") || exit 1
    _nl_run ip link add "$br" type bridge || _nl_die "cannot create bridge $br"
    _nl_run ip addr add "10.$x.0.254/24" dev "$br" || _nl_die "cannot address bridge $br"
    _nl_run ip link set "$br" up || _nl_die "cannot bring up bridge $br"
    exec 9>&-
    # Bridged traffic passes host iptables when br_netfilter is loaded; a
    # FORWARD policy of DROP (Docker sets one) would silently cut the nodes
    # apart, so accept bridge-to-bridge traffic for this bridge only.
    if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
        _nl_run iptables -w 5 -I FORWARD -i "$br" -o "$br" -j ACCEPT || _nl_die "cannot allow forwarding on $br"
    fi
    for i in $(seq 1 "$n"); do
        ns="$prefix-$i"
        veth=$(_nl_veth "$prefix" "$i")
        _nl_run ip netns add "$ns" || _nl_die "cannot create namespace $ns"
        _nl_run ip link add "$veth" type veth peer name eth0 netns "$ns" || _nl_die "cannot create veth $veth"
        _nl_run ip link set "$veth" master "$br" up || _nl_die "cannot attach $veth to $br"
        _nl_run ip -n "$ns" link set lo up || _nl_die "cannot bring up lo in $ns"
        _nl_run ip -n "$ns" addr add "10.$x.0.$i/24" dev eth0 || _nl_die "cannot address eth0 in $ns"
        _nl_run ip -n "$ns" link set eth0 up || _nl_die "cannot bring up eth0 in $ns"
    done
    echo "10.$x.0"
}

# Adds RULE to CHAIN in NS unless present (iptables -C first).
_nl_add() {
    local ns=$1 chain=$2
    shift 2
    timeout "$NETNS_CMD_TIMEOUT_S" ip netns exec "$ns" iptables -w 5 -C "$chain" "$@" 2>/dev/null && return 0
    _nl_run ip netns exec "$ns" iptables -w 5 -A "$chain" "$@" || _nl_die "cannot add $chain $* in $ns"
}

# Deletes every copy of RULE from CHAIN in NS (absent is fine).
_nl_del() {
    local ns=$1 chain=$2 k
    shift 2
    for k in $(seq 1 100); do
        timeout "$NETNS_CMD_TIMEOUT_S" ip netns exec "$ns" iptables -w 5 -C "$chain" "$@" 2>/dev/null || return 0
        _nl_run ip netns exec "$ns" iptables -w 5 -D "$chain" "$@" || _nl_die "cannot delete $chain $* in $ns"
    done
    _nl_die "rule $chain $* in $ns still present after 100 deletions"
}

_nl_need_ns() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1" || _nl_die "namespace $1 does not exist"
}

nl_partition() {
    local ns="$1-$2"
    _nl_need_ns "$ns"
    _nl_add "$ns" INPUT ! -i lo -j DROP
    _nl_add "$ns" OUTPUT ! -o lo -j DROP
}

nl_heal() {
    local ns="$1-$2"
    _nl_need_ns "$ns"
    _nl_del "$ns" INPUT ! -i lo -j DROP
    _nl_del "$ns" OUTPUT ! -o lo -j DROP
}

nl_block() { # PREFIX I J add|del
    local prefix=$1 i=$2 j=$3 op=$4 a b
    [ "$i" != "$j" ] || _nl_die "cannot block node $i from itself"
    _nl_need_ns "$prefix-$i"
    _nl_need_ns "$prefix-$j"
    a=$(nl_ip "$prefix" "$i") || exit 1
    b=$(nl_ip "$prefix" "$j") || exit 1
    "_nl_$op" "$prefix-$i" INPUT -s "$b" -j DROP
    "_nl_$op" "$prefix-$i" OUTPUT -d "$b" -j DROP
    "_nl_$op" "$prefix-$j" INPUT -s "$a" -j DROP
    "_nl_$op" "$prefix-$j" OUTPUT -d "$a" -j DROP
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    usage="usage: $0 setup PREFIX N | teardown PREFIX [N] | ip PREFIX I | partition PREFIX I | heal PREFIX I | block PREFIX I J | unblock PREFIX I J"
    cmd=${1:-}
    prefix=${2:-}
    [ -n "$cmd" ] && [ -n "$prefix" ] || { echo "$usage" >&2; exit 2; }
    _nl_check_prefix "$prefix"
    case "$cmd" in
    setup) nl_setup "$prefix" "${3:?$usage}" ;;
    teardown) nl_teardown "$prefix" "${3:-0}" ;;
    ip) _nl_check_index "${3:?$usage}"; nl_ip "$prefix" "$3" ;;
    partition) _nl_check_index "${3:?$usage}"; nl_partition "$prefix" "$3" ;;
    heal) _nl_check_index "${3:?$usage}"; nl_heal "$prefix" "$3" ;;
    block | unblock)
        _nl_check_index "${3:?$usage}"
        _nl_check_index "${4:?$usage}"
        if [ "$cmd" = block ]; then nl_block "$prefix" "$3" "$4" add; else nl_block "$prefix" "$3" "$4" del; fi
        ;;
    *) echo "$usage" >&2; exit 2 ;;
    esac
fi

#!/usr/bin/env bash
# Autolock / sealing benchmark (issue 13). Figures printed, never asserted.
# As root:  targets/autolock-bench.sh [ENTRIES (10000)] [RAFT_SECS (3)]
# Prints:
#  1. raft commits/s with p50/p99 latency, records sealed (as shipped) and in
#     clear (bench-only storage), same run (manager/examples/raft_bench.rs);
#  2. seal/open MiB/s of XChaCha20-Poly1305 record sealing at 128 B and 64 KiB;
#  3. a real one-node swarm with autolock: ENTRIES raft entries made through
#     the CLI (`swarm update --dispatcher-heartbeat`, a distinct value each:
#     one small entry per call), kill -9, restart
#     (locked), and the time from `swarm unlock` to the first answered
#     `service ls`; the store's size;
#  4. the stripped release binary's size (compare with the figure before
#     sealing: 4,753,728 bytes at f93ab1f, amd64 host build).
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${1:-10000}
SECS=${2:-3}
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p shoal-agent
cargo build --release -q -p shoal-manager --features sim --example raft_bench
echo "== raft, sealed vs clear"
target/release/examples/raft_bench --secs "$SECS"

BIN=$PWD/target/release/shoal
DIR=$(mktemp -d /tmp/shoal-autolock-bench.XXXXXX)
NS=shoal-autolock-bench
SOCK=$DIR/shoal.sock
export SHOAL_HOST=unix://$SOCK
cleanup() {
  [ -n "${DPID:-}" ] && kill -9 "$DPID" 2>/dev/null || true
  tests/lib/containerd.sh stop "$DIR/ctrd" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
tests/lib/containerd.sh start "$DIR/ctrd"
start_daemon() {
  "$BIN" daemon --data-dir "$DIR/data" --socket "$SOCK" --containerd "$DIR/ctrd/containerd.sock" --containerd-namespace $NS 2>>"$DIR/daemon.log" &
  DPID=$!
  for _ in $(seq 400); do "$BIN" version >/dev/null 2>&1 && return; sleep 0.05; done
  echo "the daemon did not answer" >&2
  exit 1
}
now_ms() { date +%s%3N; }
start_daemon
KEY=$("$BIN" swarm init --autolock --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 | awk '/SHLKEY-1-/ {print $1}')
echo "== $ENTRIES raft entries through the CLI (8 at a time)"
t0=$(now_ms)
seq 1000 $((1000 + ENTRIES - 1)) | xargs -P 8 -I{} "$BIN" swarm update --dispatcher-heartbeat "{}ms" >/dev/null
t1=$(now_ms)
printf 'made %s entries in %.1f s (%.0f CLI writes/s)\n' "$ENTRIES" "$(echo "($t1-$t0)/1000" | bc -l)" "$(echo "$ENTRIES*1000/($t1-$t0)" | bc -l)"
kill -9 "$DPID"
wait "$DPID" 2>/dev/null || true
start_daemon
"$BIN" service ls >/dev/null 2>&1 && { echo "the restarted manager is not locked" >&2; exit 1; }
t2=$(now_ms)
echo "$KEY" | "$BIN" swarm unlock
until "$BIN" service ls >/dev/null 2>&1; do
  [ $(( $(now_ms) - t2 )) -lt 60000 ] || { echo "no answer 60 s after unlock" >&2; exit 1; }
  sleep 0.01
done
t3=$(now_ms)
printf 'unlock -> first answered service ls: %s ms\n' "$((t3 - t2))"
"$BIN" info | grep -E "Heartbeat|Autolock"
printf 'store: %s bytes\n' "$(stat -c %s "$DIR/data/shoal.redb")"
size=$(stat -c %s "$BIN")
printf 'binary size (stripped, release): %s bytes (%+d vs 4753728 before sealing and backup)\n' "$size" "$((size - 4753728))"

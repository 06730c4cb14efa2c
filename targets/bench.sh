#!/usr/bin/env bash
# Single-node benchmark (figures printed, never asserted). As root:
#   targets/bench.sh
# Prints: stripped release binary size; daemon idle RSS after `swarm init`
# with 0 tasks; time from `service create --replicas 10 -d` to 10 running
# containers; time for `service scale` 10 -> 50 to reach 50 running; then,
# with those 50 tasks ignoring SIGTERM (`sleep` as PID 1, 10 s grace), time
# for `scale 50 -> 5` to leave 5 running, and how long a crashed task of
# another service waits for its restart while those 45 stops are in their
# grace (Docker: 13.5 s for the scale-down).
# "Running" is checked in containerd itself (ctr), not only in Shoal's view.
set -euo pipefail
cd "$(dirname "$0")/.."
./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -q -p shoal-agent
BIN=$PWD/target/release/shoal
DIR=$(mktemp -d /tmp/shoal-bench.XXXXXX)
NS=shoal-bench
SOCK=$DIR/shoal.sock
CTR="ctr --address $DIR/ctrd/containerd.sock --namespace $NS"
export SHOAL_HOST=unix://$SOCK
cleanup() {
  # Leaving the swarm takes the tasks' network namespaces (bind mounts under data/netns).
  [ -n "${DPID:-}" ] && timeout 60 "$BIN" swarm leave --force >/dev/null 2>&1 || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null || true
  tests/lib/containerd.sh stop "$DIR/ctrd" >/dev/null 2>&1 || true
  for m in "$DIR"/data/netns/*; do umount "$m" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT
tests/lib/containerd.sh start "$DIR/ctrd"
"$BIN" daemon --data-dir "$DIR/data" --socket "$SOCK" --containerd "$DIR/ctrd/containerd.sock" --containerd-namespace $NS 2>"$DIR/daemon.log" &
DPID=$!
for _ in $(seq 200); do "$BIN" version >/dev/null 2>&1 && break; sleep 0.05; done
"$BIN" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:0 >/dev/null
tests/lib/mkimage.sh "$DIR/busybox.tar" shoal.bench/busybox:latest >/dev/null 2>&1
"$BIN" image load -i "$DIR/busybox.tar" >/dev/null
sleep 1
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
size=$(stat -c %s "$BIN")

now_ms() { date +%s%3N; }
running() { $CTR tasks ls 2>/dev/null | awk 'NR>1 && $3=="RUNNING"' | wc -l; }
wait_running() { # N TIMEOUT_S
  local deadline=$(( $(now_ms) + $2 * 1000 ))
  while [ "$(running)" -lt "$1" ]; do
    [ "$(now_ms)" -lt "$deadline" ] || { echo "timed out waiting for $1 running containers" >&2; exit 1; }
    sleep 0.02
  done
}
t0=$(now_ms)
"$BIN" service create -d --name bench --replicas 10 shoal.bench/busybox sleep 100000 >/dev/null
wait_running 10 60
t1=$(now_ms)
"$BIN" service scale -d bench=50 >/dev/null
wait_running 50 120
t2=$(now_ms)
rss_busy_kib=$(awk '/VmRSS/ {print $2}' "/proc/$DPID/status")
"$BIN" service create -d --name other --restart-delay 0s shoal.bench/busybox sleep 100000 >/dev/null
wait_running 51 60
other_ids() { "$BIN" service ps --no-trunc --format json other | sed -n 's/.*"ID":"\([^"]*\)".*/\1/p'; }
victim=$(other_ids | head -n 1)
victim_pid=$($CTR tasks ls | awk -v id="$victim" '$1 == id { print $2 }')
t3=$(now_ms)
"$BIN" service scale -d bench=5 >/dev/null
sleep 0.2
t4=$(now_ms)
kill -9 "$victim_pid"
deadline=$(( $(now_ms) + 60000 ))
until $CTR tasks ls | awk 'NR>1 && $3=="RUNNING" { print $1 }' | grep -v -x "$victim" | grep -q -x -F "$(other_ids | grep -v -x "$victim")"; do
  [ "$(now_ms)" -lt "$deadline" ] || { echo "timed out waiting for other's replacement" >&2; exit 1; }
  sleep 0.02
done
t5=$(now_ms)
deadline=$(( $(now_ms) + 120000 ))
while [ "$(running)" -gt 6 ]; do
  [ "$(now_ms)" -lt "$deadline" ] || { echo "timed out waiting for 5 + 1 running containers" >&2; exit 1; }
  sleep 0.05
done
t6=$(now_ms)
"$BIN" service rm bench other >/dev/null
printf 'binary size (stripped, release):       %s bytes (%.2f MiB)\n' "$size" "$(echo "$size/1048576" | bc -l)"
printf 'daemon idle RSS after init, 0 tasks:   %s KiB (%.1f MiB)\n' "$rss_kib" "$(echo "$rss_kib/1024" | bc -l)"
printf 'create --replicas 10 -> 10 running:    %s ms\n' $((t1 - t0))
printf 'scale 10 -> 50 -> 50 running:          %s ms\n' $((t2 - t1))
printf 'daemon RSS with 50 tasks:              %s KiB\n' "$rss_busy_kib"
printf 'scale 50 -> 5, SIGTERM ignored, 10 s grace: %s ms\n' $((t6 - t3))
printf 'crash -> restart during those 45 stops: %s ms\n' $((t5 - t4))

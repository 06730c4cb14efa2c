#!/usr/bin/env bash
# Side-by-side raft benchmark (figures printed, never asserted). As root:
#   targets/raft-bench.sh [SECS]        # SECS per run, default 5
# 1. Shoal: manager/examples/raft_bench.rs, a 3-node cluster in one process,
#    real redb files with fsync, in $TMPDIR (default /tmp).
# 2. etcd 3.4 (Debian etcd-server, installed if missing): three members on
#    127.0.0.1 with data dirs in a temp dir on the same filesystem, default
#    snapshot settings; manager/examples/etcd_load.rs puts 128-byte values
#    to the leader through the v3 JSON gateway (HTTP/1.1 keep-alive).
# Both run 1 client and 64 concurrent clients; then a table with the ratio
# Shoal/etcd. etcd is stopped and temp dirs removed on exit, whatever happens.
# Loopback only; every wait is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECS=${1:-5}
BYTES=128

DIR=$(mktemp -d "${TMPDIR:-/tmp}/shoal-etcd-bench.XXXXXX")
PIDS=()   # etcd members
BENCH_PID= # the benchmark running now, if any
cleanup() {
  [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
  # SIGTERM, up to 3 s for a graceful stop (a stopping etcd leader first
  # tries to hand leadership to peers that are stopping too), then SIGKILL;
  # the data is thrown away anyway.
  if [ ${#PIDS[@]} -gt 0 ]; then
    kill "${PIDS[@]}" 2>/dev/null || true
    for _ in $(seq 30); do
      alive=0
      for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 1 ] || break
      sleep 0.1
    done
    for p in "${PIDS[@]}"; do
      kill -9 "$p" 2>/dev/null || true
      { wait "$p"; } 2>/dev/null || true
    done
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Runs a benchmark in the background and waits for it, so that a signal is
# handled at once (bash defers traps until a foreground child exits); its
# output goes to FILE and is shown when it ends.
run_bench() { # FILE CMD...
  local file=$1 rc=0
  shift
  "$@" >"$file" &
  BENCH_PID=$!
  wait $BENCH_PID || rc=$?
  BENCH_PID=
  cat "$file"
  return $rc
}

if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  echo "== installing etcd-server etcd-client"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q etcd-server etcd-client >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q etcd-server etcd-client >/dev/null; }
fi
ETCD_VERSION=$(etcd --version | awk '/etcd Version/ {print $3}')

echo "== building the benchmarks (release)"
cargo build --release -q -p shoal-manager --features sim --example raft_bench --example etcd_load
BIN=$PWD/target/release/examples

echo "== Shoal raft ($SECS s per run)"
run_bench "$DIR/shoal.txt" "$BIN/raft_bench" --secs "$SECS" --bytes "$BYTES"

# Six free loopback ports: client/peer for each member.
listening() { ss -Hltn | awk '{print $4}' | grep -q ":$1\$"; }
BASE=
for b in $(seq 23790 10 23990); do
  busy=0
  for k in 0 1 2 3 4 5; do if listening $((b + k)); then busy=1; break; fi; done
  if [ $busy = 0 ]; then BASE=$b; break; fi
done
[ -n "$BASE" ] || { echo "no six free ports in 23790-23995" >&2; exit 1; }
client_port() { echo $((BASE + 2 * ($1 - 1))); }
peer_port() { echo $((BASE + 2 * ($1 - 1) + 1)); }
CLUSTER=$(for m in 1 2 3; do printf 'm%s=http://127.0.0.1:%s,' "$m" "$(peer_port $m)"; done)
CLUSTER=${CLUSTER%,}
ENDPOINTS=$(for m in 1 2 3; do printf '127.0.0.1:%s,' "$(client_port $m)"; done)
ENDPOINTS=${ENDPOINTS%,}

echo "== etcd $ETCD_VERSION: 3 members on 127.0.0.1:$BASE-$((BASE + 5)), data in $DIR"
for m in 1 2 3; do
  c=http://127.0.0.1:$(client_port $m)
  p=http://127.0.0.1:$(peer_port $m)
  etcd --name "m$m" --data-dir "$DIR/m$m" \
    --listen-client-urls "$c" --advertise-client-urls "$c" \
    --listen-peer-urls "$p" --initial-advertise-peer-urls "$p" \
    --initial-cluster "$CLUSTER" --initial-cluster-token "shoal-bench-$$" --initial-cluster-state new \
    --logger zap --log-level warn >"$DIR/m$m.log" 2>&1 &
  PIDS+=($!)
done
healthy=0
for _ in $(seq 60); do # <= ~30 s (+ command timeouts)
  if etcdctl --endpoints "$ENDPOINTS" --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1; then healthy=1; break; fi
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || { echo "an etcd member exited:" >&2; tail -5 "$DIR"/m*.log >&2; exit 1; }; done
  sleep 0.5
done
[ $healthy = 1 ] || { echo "etcd cluster not healthy within 30 s:" >&2; tail -5 "$DIR"/m*.log >&2; exit 1; }

echo "== etcd ($SECS s per run)"
run_bench "$DIR/etcd.txt" timeout $((4 * SECS + 60)) "$BIN/etcd_load" --endpoints "$ENDPOINTS" --secs "$SECS" --bytes "$BYTES"

# "clients= 1:     1234 commits/s, p50   1.23 ms, p99   4.56 ms (6170 commits)"
fields() { # FILE CLIENTS -> "rate p50 p99"
  sed -n "s/^clients= *$2: *\([0-9.]*\) commits\/s, p50 *\([0-9.]*\) ms, p99 *\([0-9.]*\) ms.*/\1 \2 \3/p" "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }
echo
echo "== side by side ($SECS s per run, $BYTES-byte payloads, 3 nodes, fsync on; $(nproc) cores, load avg $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-8s %-10s %12s %10s %10s\n' clients system commits/s 'p50 ms' 'p99 ms'
for c in 1 64; do
  read -r sr s50 s99 <<<"$(fields "$DIR/shoal.txt" "$c")" || true
  read -r er e50 e99 <<<"$(fields "$DIR/etcd.txt" "$c")" || true
  printf '%-8s %-10s %12s %10s %10s\n' "$c" shoal "${sr:--}" "${s50:--}" "${s99:--}"
  printf '%-8s %-10s %12s %10s %10s\n' "$c" "etcd" "${er:--}" "${e50:--}" "${e99:--}"
  printf '%-8s %-10s %12s %10s %10s\n' "$c" shoal/etcd "$(ratio "${sr:-0}" "${er:-0}")" "$(ratio "${s50:-0}" "${e50:-0}")" "$(ratio "${s99:-0}" "${e99:-0}")"
done
echo "(commits/s: higher is better; latency ratios below 1x favour Shoal. Shoal's latency is propose -> applied"
echo " at the leader in-process; etcd's is the client's HTTP round trip through the gateway on loopback.)"

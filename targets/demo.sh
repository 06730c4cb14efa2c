#!/usr/bin/env bash
# Shoal's main job on one fresh Debian 12 machine (as root): installs what is
# missing, builds shoal, starts a private containerd and a shoal daemon, builds
# a small busybox image locally, initialises a swarm and runs a replicated
# service of three containers. Leaves it running; `targets/demo.sh stop`
# tears everything down. Never touches a system containerd or Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${SHOAL_DEMO_DIR:-/var/lib/shoal-demo}
SOCK=/run/shoal-demo/shoal.sock
export SHOAL_HOST="unix://$SOCK"

stop() {
  if [ -f "$DEMO/daemon.pid" ]; then kill "$(cat "$DEMO/daemon.pid")" 2>/dev/null || true; rm -f "$DEMO/daemon.pid"; fi
  tests/lib/containerd.sh stop "$DEMO/ctrd" || true
  echo "demo stopped (state kept in $DEMO; rm -rf it to start over)"
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

./targets/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "== building shoal (release)"
cargo build --release -q -p shoal-agent
BIN=$PWD/target/release/shoal
mkdir -p "$DEMO"
echo "== starting a private containerd on $DEMO/ctrd/containerd.sock"
tests/lib/containerd.sh start "$DEMO/ctrd"
if ! "$BIN" version >/dev/null 2>&1; then
  echo "== starting shoal daemon (log: $DEMO/daemon.log)"
  nohup "$BIN" daemon --data-dir "$DEMO/data" --socket "$SOCK" --containerd "$DEMO/ctrd/containerd.sock" >"$DEMO/daemon.log" 2>&1 &
  echo $! >"$DEMO/daemon.pid"
  for _ in $(seq 100); do "$BIN" version >/dev/null 2>&1 && break; sleep 0.1; done
  "$BIN" version >/dev/null || { cat "$DEMO/daemon.log"; exit 1; }
fi
"$BIN" swarm init --advertise-addr 127.0.0.1 2>/dev/null || echo "(already a swarm)"
echo "== building and loading a busybox image"
[ -f "$DEMO/busybox.tar" ] || tests/lib/mkimage.sh "$DEMO/busybox.tar" shoal.demo/busybox:latest
"$BIN" image load -i "$DEMO/busybox.tar"
if ! "$BIN" service inspect web >/dev/null 2>&1; then
  echo "== creating service web: 3 replicas that log a heartbeat"
  "$BIN" service create --name web --replicas 3 shoal.demo/busybox sh -c 'while true; do echo "$(hostname) alive at $(date)"; sleep 5; done'
fi
echo "== shoal service ls"; "$BIN" service ls
echo "== shoal service ps web"; "$BIN" service ps web
echo "== shoal node ls"; "$BIN" node ls
cat <<MSG

The swarm is running. Try:
  export SHOAL_HOST=$SHOAL_HOST
  $BIN service scale web=5
  $BIN service logs web
Stop it with: targets/demo.sh stop
MSG

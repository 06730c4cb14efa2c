#!/usr/bin/env bash
# Swarm-port flood benchmark (issue 11; figures printed, never asserted). As root:
#   targets/flood-bench.sh            # release build of this tree
#   BIN=/path/to/shoal targets/flood-bench.sh
# Starts a private containerd and one daemon, `swarm init` on 127.0.0.1, then
# opens two waves of FLOOD_CONNS (default 1000) TCP connections to the swarm
# port that send the node preamble and the start of a Noise handshake message
# announcing the largest handshake length, then trickle one byte per
# connection per second and never finish (slowloris peers): wave 1 all from
# 127.0.0.2, wave 2 each from its own address in 127.1.0.0/16.
# Prints the daemon's VmRSS before, after each wave, once every flooding
# connection is closed, and 10 s later; how many flooding connections the
# daemon still held at the end of each wave; and whether a real node could
# still join while the flood was on (`swarm join` of a second daemon).
set -euo pipefail
cd "$(dirname "$0")/.."
./targets/setup.sh >/dev/null
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p shoal-agent
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/shoal
fi
CONNS=${FLOOD_CONNS:-1000}
DIR=$(mktemp -d /tmp/shoal-flood.XXXXXX)
NS=shoal-flood
cleanup() {
  [ -n "${FPID:-}" ] && kill "$FPID" 2>/dev/null || true
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null || true
  [ -n "${D2PID:-}" ] && kill "$D2PID" 2>/dev/null || true
  tests/lib/containerd.sh stop "$DIR/ctrd" >/dev/null 2>&1 || true
  tests/lib/containerd.sh stop "$DIR/ctrd2" >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
ulimit -n 20000
tests/lib/containerd.sh start "$DIR/ctrd" >/dev/null
tests/lib/containerd.sh start "$DIR/ctrd2" >/dev/null
"$BIN" daemon --data-dir "$DIR/data" --socket "$DIR/shoal.sock" --containerd "$DIR/ctrd/containerd.sock" \
  --containerd-namespace $NS 2>"$DIR/daemon.log" &
DPID=$!
"$BIN" daemon --data-dir "$DIR/data2" --socket "$DIR/shoal2.sock" --containerd "$DIR/ctrd2/containerd.sock" \
  --containerd-namespace $NS 2>"$DIR/daemon2.log" &
D2PID=$!
for _ in $(seq 200); do SHOAL_HOST=unix://$DIR/shoal.sock "$BIN" version >/dev/null 2>&1 && break; sleep 0.05; done
for _ in $(seq 200); do SHOAL_HOST=unix://$DIR/shoal2.sock "$BIN" version >/dev/null 2>&1 && break; sleep 0.05; done
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SHOAL_HOST=unix://$DIR/shoal.sock "$BIN" swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:$PORT >/dev/null
TOKEN=$(SHOAL_HOST=unix://$DIR/shoal.sock "$BIN" swarm join-token -q worker)
sleep 1
rss() { awk '/VmRSS/ {print $2}' "/proc/$DPID/status"; }
rss_before=$(rss)

# The flooder: reports on stdout, takes "wave", "close" on stdin.
mkfifo "$DIR/ctl"
cat >"$DIR/flood.py" <<'EOF'
import select, socket, sys, threading, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks, lock = [], threading.Lock()
def trickle():
    while True:
        time.sleep(1)
        with lock:
            for s in socks:
                if s.fileno() < 0: continue
                try: s.send(b"\0")
                except OSError: s.close()
threading.Thread(target=trickle, daemon=True).start()
def alive(s):
    if s.fileno() < 0: return False
    p = select.poll()
    p.register(s, select.POLLIN)
    if not p.poll(0): return True
    try: return s.recv(4096, socket.MSG_PEEK) != b""
    except OSError: return False
for line in sys.stdin:
    cmd = line.strip()
    if cmd.startswith("wave"):
        for i in range(n):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.bind(("127.0.0.2" if cmd == "wave1" else f"127.1.{i // 250}.{i % 250 + 1}", 0))
                s.connect(("127.0.0.1", port))
                # Preamble 'N', then a handshake length of 1121 (HANDSHAKE_MESSAGE_BYTES_MAX) and 3 bytes.
                s.send(b"N" + (1121).to_bytes(2, "big") + b"\0\0\0")
                s.setblocking(False)
            except OSError:
                s.close()
            with lock: socks.append(s)
        time.sleep(4)
        with lock: print("open", sum(alive(s) for s in socks), "of", len(socks), flush=True)
    elif cmd == "close":
        with lock:
            for s in socks: s.close()
            socks.clear()
        print("closed", flush=True)
EOF
python3 -u "$DIR/flood.py" "$PORT" "$CONNS" <"$DIR/ctl" >"$DIR/flood.out" 2>&1 &
FPID=$!
exec 3>"$DIR/ctl"
await() { # LINE-PREFIX: waits for the flooder's next report
  for _ in $(seq 600); do
    [ "$(grep -c "^$1" "$DIR/flood.out" || true)" -ge "$2" ] && { grep "^$1" "$DIR/flood.out" | sed -n "$2p"; return; }
    sleep 0.1
  done
  echo "flooder did not report $1" >&2; cat "$DIR/flood.out" >&2; exit 1
}
# Peak RSS while flooding, sampled every 100 ms.
( peak=0; while kill -0 "$DPID" 2>/dev/null && [ ! -e "$DIR/stop" ]; do
    r=$(rss); [ "$r" -gt "$peak" ] && { peak=$r; echo "$peak" >"$DIR/peak"; }; sleep 0.1
  done ) &
SPID=$!
echo wave1 >&3
open1=$(await open 1)
rss_wave1=$(rss)
echo wave2 >&3
open2=$(await open 2)
rss_wave2=$(rss)
join_ms=$(date +%s%3N)
if SHOAL_HOST=unix://$DIR/shoal2.sock timeout 30 "$BIN" swarm join --token "$TOKEN" --advertise-addr 127.0.0.1 \
  --listen-addr 127.0.0.1:0 127.0.0.1:$PORT >/dev/null 2>"$DIR/join.err"; then
  join="joined in $(( $(date +%s%3N) - join_ms )) ms"
else
  join="FAILED: $(cat "$DIR/join.err")"
fi
touch "$DIR/stop"; wait "$SPID" || true
echo close >&3
await closed 1 >/dev/null
sleep 5
rss_closed=$(rss)
sleep 10
rss_later=$(rss)
refusals=$(grep -c "refus" "$DIR/daemon.log" || true)
printf 'daemon RSS before the flood:             %s KiB\n' "$rss_before"
printf 'wave 1: %s conns from one address, +4 s: %s KiB (%s)\n' "$CONNS" "$rss_wave1" "$open1"
printf 'wave 2: %s more from %s addresses, +4 s: %s KiB (%s)\n' "$CONNS" "$CONNS" "$rss_wave2" "$open2"
printf 'peak during the flood:                   %s KiB\n' "$(cat "$DIR/peak")"
printf 'a worker joining during the flood:       %s\n' "$join"
printf '5 s after the flooder closed all:        %s KiB\n' "$rss_closed"
printf '15 s after:                              %s KiB\n' "$rss_later"
printf 'daemon log lines mentioning refusals:    %s\n' "$refusals"

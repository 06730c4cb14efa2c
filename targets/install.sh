#!/usr/bin/env bash
# Installs shoal on a Debian-like device as a systemd service, or removes it.
#
#   targets/install.sh install [--binary FILE] [--bin-dir DIR] [--root DIR]
#                              [--no-start] [--daemon-args "ARGS"]
#   targets/install.sh uninstall [--bin-dir DIR] [--root DIR] [--purge]
#   targets/install.sh unit [--exec PATH] [--daemon-args "ARGS"]   (prints the unit)
#
# install: copies the static binary (default: dist/shoal-linux-<this arch>,
# else `shoal` on PATH) to BIN-DIR (/usr/local/bin), writes
# /etc/systemd/system/shoal.service (restart always, after containerd), and
# enables and starts it. With --root DIR everything goes under DIR and
# nothing is started (image building, tests). containerd must be installed
# (`apt-get install containerd runc`); the unit waits for containerd.service.
# uninstall: stops and disables the service, removes the unit and the binary;
# the data dir (/var/lib/shoal: swarm state, volumes, logs) stays unless
# --purge. The unit is checked by `systemd-analyze verify` in
# tests/tests/install.rs.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "install: $*" >&2; exit 1; }

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
binary="" bin_dir=/usr/local/bin root="" start=1 purge=0 daemon_args="" exec_path=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a file}; shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; start=0; shift 2 ;;
    --no-start) start=0; shift ;;
    --purge) purge=1; shift ;;
    --daemon-args) daemon_args=${2?--daemon-args needs a value}; shift 2 ;;
    --exec) exec_path=${2:?--exec needs a path}; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$bin_dir" in /*) ;; *) die "--bin-dir must be absolute: $bin_dir" ;; esac
case "$daemon_args" in *$'\n'*) die "--daemon-args must be one line" ;; esac

unit_text() { # EXEC_PATH
  cat <<EOF
# Installed by shoal's targets/install.sh; remove with: install.sh uninstall
[Unit]
Description=Shoal container orchestrator (manager and worker)
After=network-online.target containerd.service time-set.target
Wants=network-online.target containerd.service
# A device that boots without a manager in reach still runs its tasks:
# never give up restarting.
StartLimitIntervalSec=0

[Service]
Type=simple
ExecStart=$1 daemon${daemon_args:+ $daemon_args}
# Tasks are containerd's: stopping or restarting the daemon never kills them
# (they are adopted again at start), as Docker's own unit does.
KillMode=process
Restart=always
RestartSec=2
LimitNOFILE=1048576
TasksMax=infinity
OOMScoreAdjust=-500

[Install]
WantedBy=multi-user.target
EOF
}

systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

case "$cmd" in
  unit)
    unit_text "${exec_path:-$bin_dir/shoal}"
    ;;
  install)
    if [ -z "$binary" ]; then
      case "$(uname -m)" in
        x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7l) arch=arm-v7 ;; i?86) arch=386 ;;
        mips64) arch=mips64le ;; ppc64le) arch=ppc64le ;; s390x) arch=s390x ;; *) arch=$(uname -m) ;;
      esac
      here=$(cd "$(dirname "$0")/.." && pwd)
      if [ -f "$here/dist/shoal-linux-$arch" ]; then
        binary="$here/dist/shoal-linux-$arch"
      elif command -v shoal >/dev/null 2>&1; then
        binary=$(command -v shoal)
      else
        die "no binary: pass --binary FILE (targets/build.sh puts one per arch in dist/)"
      fi
    fi
    [ -f "$binary" ] || die "binary $binary not found"
    "$binary" --version 2>/dev/null | grep -q '^shoal ' ||
      die "$binary does not run here or is not shoal (another architecture?): $("$binary" --version 2>&1 | head -1)"
    [ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run as root (or with --root DIR)"
    if [ -z "$root" ] && ! command -v containerd >/dev/null 2>&1; then
      echo "install: warning: containerd is not installed; shoal needs it: apt-get install containerd runc" >&2
    fi
    install -d -m 0755 "$root$bin_dir" "$root/etc/systemd/system"
    # Replace atomically: a running daemon keeps its (unlinked) binary.
    install -m 0755 "$binary" "$root$bin_dir/.shoal.new"
    mv -f "$root$bin_dir/.shoal.new" "$root$bin_dir/shoal"
    unit_text "$bin_dir/shoal" >"$root/etc/systemd/system/.shoal.service.new"
    chmod 0644 "$root/etc/systemd/system/.shoal.service.new"
    mv -f "$root/etc/systemd/system/.shoal.service.new" "$root/etc/systemd/system/shoal.service"
    echo "installed $root$bin_dir/shoal and $root/etc/systemd/system/shoal.service"
    if [ "$start" = 1 ] && systemd_running; then
      systemctl daemon-reload
      systemctl enable shoal.service
      systemctl restart shoal.service
      echo "shoal.service enabled and started: systemctl status shoal; shoal info"
    elif [ "$start" = 1 ]; then
      echo "install: systemd is not running here: start it with 'systemctl enable --now shoal' once it is" >&2
    fi
    ;;
  uninstall)
    [ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run as root (or with --root DIR)"
    if systemd_running; then
      systemctl disable --now shoal.service 2>/dev/null || true
    fi
    rm -f "$root/etc/systemd/system/shoal.service" "$root$bin_dir/shoal"
    # The unit's KillMode=process leaves tasks to containerd: say so.
    if [ -z "$root" ] && command -v ctr >/dev/null 2>&1; then
      left=$(ctr -n shoal tasks ls -q 2>/dev/null | wc -l || true)
      if [ "${left:-0}" -gt 0 ]; then
        echo "install: $left task container(s) of shoal still run in containerd (namespace shoal); remove them with: ctr -n shoal tasks kill -a -s KILL ID; ctr -n shoal containers rm ID" >&2
      fi
    fi
    if systemd_running; then
      systemctl daemon-reload
    fi
    if [ "$purge" = 1 ]; then
      rm -rf "$root/var/lib/shoal"
      echo "removed shoal, its unit and its data dir $root/var/lib/shoal"
    else
      echo "removed shoal and its unit; its data ($root/var/lib/shoal) stays (--purge removes it)"
    fi
    ;;
  *) usage ;;
esac

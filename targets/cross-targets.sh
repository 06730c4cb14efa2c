# Sourced by targets/build.sh, targets/qemu-test.sh and targets/ci-cross.sh:
# the seven release targets, one line each.
#   name  triple  toolchain  route  Debian packages (comma-separated: cross gcc, and
#   for static glibc the libc6-dev cross package, which the gcc only
#   recommends and build.sh installs without recommends; for musl-zig only
#   the cross binutils, whose strip build.sh uses)  qemu  platform
#   reported by `shoal version`
# shellcheck shell=bash
CROSS_TARGETS=(
  "amd64    x86_64-unknown-linux-musl        nightly musl           -                          qemu-x86_64-static  linux/amd64"
  "arm64    aarch64-unknown-linux-musl       nightly musl-zig       binutils-aarch64-linux-gnu qemu-aarch64-static linux/arm64/v8"
  "386      i686-unknown-linux-musl          nightly musl           gcc-i686-linux-gnu         qemu-i386-static    linux/386"
  "mips64le mips64el-unknown-linux-muslabi64 nightly musl-zig       binutils-mips64el-linux-gnuabi64 qemu-mips64el-static linux/mips64le"
  "ppc64le  powerpc64le-unknown-linux-musl   nightly musl-zig       binutils-powerpc64le-linux-gnu qemu-ppc64le-static linux/ppc64le"
  "s390x    s390x-unknown-linux-musl         nightly musl-zig       binutils-s390x-linux-gnu qemu-s390x-static   linux/s390x"
  "arm-v7   armv7-unknown-linux-gnueabihf    nightly static-glibc   gcc-arm-linux-gnueabihf,libc6-dev-armhf-cross qemu-arm-static     linux/arm/v7"
)
# Rustflags of every release build (nightly, std built with
# optimize_for_size), on top of the target's own in .cargo/config.toml:
# no unwind tables (panic=abort never unwinds; a stripped backtrace has no
# names), no file:line in panics (their messages stay), and no position-
# independent code (a static binary needs no load-time relocations: amd64
# -119 KB). SHOAL_RELEASE_RUSTFLAGS (a TOML array) replaces them, for
# measuring routes.
RELEASE_RUSTFLAGS='"-C", "force-unwind-tables=no", "-Z", "location-detail=none", "-C", "relocation-model=static"'
# Targets that fit the budget only without the panic machinery: a panic
# aborts at once, with no message (`-C panic=immediate-abort`; mips64le with
# TLS: 5,400,736 -> 5,084,216 bytes, 2026-12-07). Every other target keeps
# its panic messages.
IMMEDIATE_ABORT_TARGETS=" mips64le s390x ppc64le "
# Targets whose derived `Debug` impls print only the type or variant name
# (`-Z fmt-debug=shallow`; strings' and numbers' Debug, which messages
# quote with, are unchanged): mips64le 5,212,552 -> 5,109,264 bytes.
SHALLOW_DEBUG_TARGETS=" mips64le s390x ppc64le "
# Targets whose crypto crates are built for size too (Cargo.toml builds
# them at opt-level 3 for throughput; at "z" a Noise handshake is still
# ~12 ms on amd64, bulk encryption slower): mips64le, -13 KB (5,351,728 ->
# 5,338,544 with healthchecks, 2026-12-07; still over the budget).
SIZE_CRYPTO_TARGETS=" mips64le "
# Targets built without healthcheck probes (shoal-agent's `probes` feature:
# containerd exec, ~50 KB): mips64le 5,268,240 -> 5,221,344, s390x
# 5,276,232 -> 5,228,872 (2026-12-07). A task with a healthcheck there fails
# unhealthy, saying why. Next: the remedies in targets/README.md, then these
# targets get probes back.
# Since 2026-12-07 (evening) none: mips64le has probes again (5,228,624
# bytes with them, once `legacy` and `tls12` are left out there).
NO_PROBES_TARGETS=${NO_PROBES_TARGETS-" "}
# Targets built without Go templates for --format (shoal-agent's
# `templates` feature, ~50 KB): mips64le (2026-12-07). There `--format
# '{{...}}'` is refused with the reason; table and json work.
NO_TEMPLATES_TARGETS=${NO_TEMPLATES_TARGETS-" mips64le s390x "}
# Targets whose registry client speaks TLS 1.3 only (shoal-agent's `tls12`
# feature off, about -26 KB of rustls' TLS 1.2 state machine and suites):
# mips64le (2026-12-07). A registry that speaks only TLS 1.2 is refused there
# with the reason.
NO_TLS12_TARGETS=${NO_TLS12_TARGETS-" mips64le "}
# Targets that do not read data older Shoals wrote (shoal-agent's `legacy`
# feature: raft entries 1-3, snapshots 1-12, worker records 1, about 80 KB
# of frozen types and their decoders): mips64le (2026-12-07). Such data is
# refused there with the reason; every format written since reads.
NO_LEGACY_TARGETS=${NO_LEGACY_TARGETS-" mips64le s390x "}
# Targets built without Compose files for `stack deploy` (shoal-agent's
# `stacks` feature: the YAML parser and the conversion). There `stack
# deploy` is refused with the reason; the other stack commands work.
# Measured sizes: targets/README.md.
NO_STACKS_TARGETS=${NO_STACKS_TARGETS-" mips64le s390x "}
# Size options for LLVM's MIPS backend (its codegen runs once, in the
# fat-LTO link): machine code only, no feature or message changes. Only
# the two that change layout, never semantics, are on (measured on
# mips64le with stacks, 2026-12-08): functions aligned to 4 bytes (the
# instruction size) instead of 8, about 6,200 padding words, -22.7 KB;
# jump tables only for switches of 40 cases or more (a table address is
# 6 instructions on mips64, an entry 8 bytes), -46.7 KB. Delay slots
# filled from successors and tail calls (-103 KB more) and IPRA are off
# by default in LLVM's MIPS backend and not taken without a release
# test run under QEMU (targets/README.md).
MIPS_SIZE_TARGETS=" mips64le "
MIPS_SIZE_LLVM_ARGS=', "-C", "llvm-args=-align-all-functions=2", "-C", "llvm-args=-min-jump-table-entries=40"'
SIZE_CRYPTO_CRATES="snow chacha20poly1305 chacha20 poly1305 blake2 curve25519-dalek"
release_rustflags() {
  if [ -n "${SHOAL_RELEASE_RUSTFLAGS:-}" ]; then
    echo "$SHOAL_RELEASE_RUSTFLAGS"
    return
  elif [ "$T_TOOLCHAIN" = stable ]; then
    # No -Z on stable (and std comes prebuilt, with its own unwind tables).
    echo '["-C", "force-unwind-tables=no", "-C", "relocation-model=static"]'
    return
  fi
  local flags=$RELEASE_RUSTFLAGS
  [[ $IMMEDIATE_ABORT_TARGETS == *" $T_NAME "* ]] && flags+=', "-Z", "unstable-options", "-C", "panic=immediate-abort"'
  [[ $SHALLOW_DEBUG_TARGETS == *" $T_NAME "* ]] && flags+=', "-Z", "fmt-debug=shallow"'
  [[ $MIPS_SIZE_TARGETS == *" $T_NAME "* ]] && flags+=$MIPS_SIZE_LLVM_ARGS
  echo "[$flags]"
}

# Per-binary size budget in bytes (5 MiB); build.sh fails above it.
SIZE_BUDGET_BYTES=$(grep -v '^#' "$(dirname "${BASH_SOURCE[0]}")/size-budget" | tr -d '[:space:]')
# zig (PyPI's ziglang) for the musl-zig route (mips64le); the version measured.
ZIG_VERSION=0.17.1
# mips64el (tier 3, nightly build-std): libc 0.2.190+ selected wrong
# signal/socket constants for mips64 glibc; the build pins these in a
# temporary copy of Cargo.lock (restored afterwards); other targets use the
# committed lock unchanged.
MIPS64EL_PINS=("mio 1.2.0" "libc 0.2.185")

# zig_env: makes zig reachable for targets/zig-cc (the musl-zig route's
# linker): zig on PATH, or PyPI's ziglang in this python3, else ziglang
# installed into a venv under the target dir (Debian's python3 refuses a
# system-wide pip install), whose bin/ is put first on PATH.
zig_env() {
  command -v zig >/dev/null 2>&1 && return 0
  python3 -m ziglang version >/dev/null 2>&1 && return 0
  local venv
  venv="${CARGO_TARGET_DIR:-target}/zig-venv"
  if ! "$venv/bin/python3" -m ziglang version >/dev/null 2>&1; then
    echo "installing zig $ZIG_VERSION from PyPI (ziglang) into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python3" -m pip install -q "ziglang==$ZIG_VERSION"
  fi
  PATH="$(cd "$venv/bin" && pwd):$PATH"
  export PATH
}

# cross_lookup NAME-or-TRIPLE: sets T_NAME T_TRIPLE T_TOOLCHAIN T_ROUTE T_PKG T_QEMU T_PLATFORM.
cross_lookup() {
  local line
  for line in "${CROSS_TARGETS[@]}"; do
    # shellcheck disable=SC2086
    set -- $line
    if [ "$1" = "${WANT}" ] || [ "$2" = "${WANT}" ]; then
      T_NAME=$1 T_TRIPLE=$2 T_TOOLCHAIN=$3 T_ROUTE=$4 T_PKG=$5 T_QEMU=$6 T_PLATFORM=$7
      return 0
    fi
  done
  return 1
}

# cross_resolve ARGS...: prints the target names (all seven when no args);
# fails on an unknown one.
cross_resolve() {
  local line
  if [ $# -eq 0 ]; then
    for line in "${CROSS_TARGETS[@]}"; do echo "${line%% *}"; done
    return 0
  fi
  for WANT in "$@"; do
    case $WANT in arm | armv7 | arm/v7) WANT=arm-v7 ;; x86_64) WANT=amd64 ;; aarch64) WANT=arm64 ;; i686 | i386) WANT=386 ;; mips64el) WANT=mips64le ;; esac
    if ! cross_lookup; then
      echo "unknown target '$WANT'; known: $(for line in "${CROSS_TARGETS[@]}"; do printf '%s ' "${line%% *}"; done)" >&2
      return 1
    fi
    echo "$T_NAME"
  done
}

# cargo_for: the cargo command prefix for the looked-up target.
cargo_for() {
  if [ "$T_TOOLCHAIN" = nightly ]; then
    CARGO=(cargo +nightly)
  else
    CARGO=(cargo)
  fi
}

# with_target_lock CMD...: runs CMD with the looked-up target's lockfile pins
# applied to a temporary Cargo.lock; the committed lock is restored after,
# also on failure or interrupt.
with_target_lock() {
  if [ "$T_NAME" != mips64le ]; then
    "$@"
    return
  fi
  local backup rc=0 pin
  backup=$(mktemp)
  cp Cargo.lock "$backup"
  # shellcheck disable=SC2064
  trap "cp '$backup' Cargo.lock; rm -f '$backup'" EXIT INT TERM
  for pin in "${MIPS64EL_PINS[@]}"; do
    cargo update -q -p "${pin% *}" --precise "${pin#* }" || { rc=$?; break; }
  done
  [ $rc -eq 0 ] && { "$@" || rc=$?; }
  cp "$backup" Cargo.lock
  rm -f "$backup"
  trap - EXIT INT TERM
  return $rc
}

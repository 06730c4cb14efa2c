#!/usr/bin/env bash
# CI's cross-architecture slice (called from targets/test.sh): builds the
# static release binaries for arm64 (aarch64 musl: 64-bit ARM) and s390x
# (musl through zig: big-endian), checks them (static, stripped, size
# budget), and runs the unit tests and `shoal version` under QEMU user-mode;
# then builds mips64le, the target closest to the 5 MiB budget, for its size
# check alone (targets/README.md has every target's size). About 10-14
# minutes on 2 cores from a cold target dir. The full seven-target run:
# targets/qemu-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
SHOAL_QEMU_SEEDS=${SHOAL_QEMU_SEEDS:-200} ./targets/qemu-test.sh arm64 s390x
echo "ci-cross: arm64 + s390x built and QEMU-tested in $((SECONDS - start))s"
t=$SECONDS
./targets/build.sh mips64le
echo "ci-cross: mips64le (the tightest budget) built and checked in $((SECONDS - t))s"

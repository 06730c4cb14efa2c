#!/usr/bin/env bash
# CI's cross-architecture slice (called from targets/test.sh): builds the
# static release binaries for arm64 (aarch64 musl: 64-bit ARM) and s390x
# (static glibc: big-endian, and the NSS-in-static-glibc resolver path),
# checks them (static, stripped, size budget), and runs the unit tests and
# `shoal version` under QEMU user-mode. About 6-10 minutes on 2 cores from a
# cold target dir. The full seven-target run: targets/qemu-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
SHOAL_QEMU_SEEDS=${SHOAL_QEMU_SEEDS:-200} ./targets/qemu-test.sh arm64 s390x
echo "ci-cross: arm64 + s390x built and QEMU-tested in $((SECONDS - start))s"

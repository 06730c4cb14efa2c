#!/usr/bin/env bash
# Proves each release target works on its own architecture under QEMU
# user-mode (qemu-<arch>-static, wired in as cargo's `runner` in
# .cargo/config.toml):
#   1. builds the release binary (targets/build.sh) and checks that
#      `shoal version` under QEMU reports the expected OCI platform;
#   2. cross-compiles the unit tests of every crate (and the integration tests
#      that need no root/containerd) and runs them under QEMU;
#   3. runs the raft simulator for SHOAL_QEMU_SEEDS seeds (default 300) when
#      manager/examples/raft_sim.rs exists.
#
#   targets/qemu-test.sh [TARGET...]   default: all seven (see targets/README.md)
#
# Skipped under QEMU, with the reason printed: the shoal-tests crate and the
# containerd driver tests (they need root, containerd, runc, namespaces and
# cgroups of the target architecture); doctests (cargo runs them for the host
# only).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=targets/cross-targets.sh
source targets/cross-targets.sh
mapfile -t NAMES < <(cross_resolve "$@")
SEEDS=${SHOAL_QEMU_SEEDS:-300}
# A wedged emulated test must not hang CI: bound every run. 1800 s: the
# arm64 unit tests took over 900 s under QEMU on a loaded 2-core machine
# (2026-12-07, a local CI run beside release builds) and were cut off.
RUN_TIMEOUT=${SHOAL_QEMU_TIMEOUT:-1800}
# Inherited from targets/test.sh; under QEMU containerd tests are skipped, not failed.
# The platform check must see the build's own platform.
unset SHOAL_REQUIRE_CONTAINERD SHOAL_TEST_PLATFORM

if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  echo "qemu-test: installing qemu-user-static" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

# Registry names the build machine can resolve: the static glibc binaries
# must resolve them too (NSS linked in statically; see image/src/http.rs).
resolve_hosts=()
for h in ${SHOAL_QEMU_RESOLVE_HOSTS:-registry-1.docker.io ghcr.io quay.io deb.debian.org index.crates.io}; do
  if timeout 10 getent hosts "$h" >/dev/null 2>&1; then resolve_hosts+=("$h"); fi
done
if [ ${#resolve_hosts[@]} -eq 0 ]; then
  echo "qemu-test: NOTE no registry host name resolves on this machine; DNS lookups are not tested (localhost via /etc/hosts still is)" >&2
fi
RESOLVE=$(IFS=,; echo "${resolve_hosts[*]}")

# Several targets: build them all, then test each in its own run so that one
# failing architecture does not hide the others; fail at the end.
if [ ${#NAMES[@]} -gt 1 ]; then
  all_start=$SECONDS
  ./targets/build.sh "${NAMES[@]}"
  summary=() failed=()
  for n in "${NAMES[@]}"; do
    t0=$SECONDS
    if SHOAL_QEMU_BUILT=1 SHOAL_QEMU_RESOLVE_HOSTS="${resolve_hosts[*]:-none.invalid}" "$0" "$n"; then
      summary+=("$(printf '%-9s ok    %4ds' "$n" $((SECONDS - t0)))")
    else
      summary+=("$(printf '%-9s FAIL  %4ds' "$n" $((SECONDS - t0)))")
      failed+=("$n")
    fi
  done
  echo
  echo "======== QEMU summary ($((SECONDS - all_start))s in total, build included)"
  printf '%s\n' "${summary[@]}"
  if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
  fi
  exit 0
fi

[ "${SHOAL_QEMU_BUILT:-}" = 1 ] || ./targets/build.sh "${NAMES[@]}"

summary=()
for WANT in "${NAMES[@]}"; do
  cross_lookup
  cargo_for
  start=$SECONDS
  echo
  echo "======== $T_NAME ($T_TRIPLE) under $T_QEMU"
  command -v "$T_QEMU" >/dev/null || { echo "FAIL: $T_QEMU not found" >&2; exit 1; }

  # 1. The release binary reports what it is.
  out=$(SHOAL_HOST=unix:///nonexistent/shoal-qemu-test.sock timeout 60 "$T_QEMU" "dist/shoal-linux-$T_NAME" version 2>&1 || true)
  got=$(sed -n 's/^ Platform: *//p' <<<"$out" | head -1)
  if [ "$got" != "$T_PLATFORM" ]; then
    printf 'FAIL: shoal version under %s reports platform %q, expected %s; output:\n%s\n' "$T_QEMU" "$got" "$T_PLATFORM" "$out" >&2
    exit 1
  fi
  echo "ok: dist/shoal-linux-$T_NAME version -> Platform: $got"

  # 2. Unit tests of every crate, and integration tests that need no root.
  # Tests use a prebuilt std wherever rustup ships one for the default toolchain (ppc64le's
  # release binary takes nightly build-std for size only): a `-Z build-std`
  # test build compiles std unoptimised, which QEMU runs several times slower
  # (ppc64le's unit tests outran RUN_TIMEOUT that way). mips64le has no prebuilt
  # std, so it keeps build-std.
  extra=()
  [ "$T_ROUTE" = musl-zig ] && zig_env
  test_cargo=("${CARGO[@]}")
  test_triple=$T_TRIPLE
  if [ "$T_TOOLCHAIN" = nightly ]; then
    if rustup target list 2>/dev/null | grep -q "^$T_TRIPLE"; then
      if ! rustup target list --installed | grep -qx "$T_TRIPLE" && ! rustup target add "$T_TRIPLE"; then
        # A mirror without this std (ppc64le musl answered 404 here): the
        # same architecture's gnu std; only the libc of the tests differs.
        test_triple=${T_TRIPLE/-musl/-gnu}
        echo "NOTE: no prebuilt std for $T_TRIPLE; unit tests run as $test_triple (same architecture)" >&2
        rustup target list --installed | grep -qx "$test_triple" || rustup target add "$test_triple"
      fi
      test_cargo=(cargo)
    elif [ "${T_TRIPLE/-musl/-gnu}" != "$T_TRIPLE" ] && rustup target list 2>/dev/null | grep -q "^${T_TRIPLE/-musl/-gnu}"; then
      # A tier 3 musl target (s390x) whose gnu sibling has a prebuilt std:
      # the same architecture and byte order; only the tests' libc differs.
      test_triple=${T_TRIPLE/-musl/-gnu}
      echo "NOTE: $T_TRIPLE is tier 3 (no prebuilt std); unit tests run as $test_triple (same architecture)" >&2
      rustup target list --installed | grep -qx "$test_triple" || rustup target add "$test_triple"
      test_cargo=(cargo)
    else
      extra=(-Z build-std)
    fi
  fi
  echo "SKIPPED under QEMU: crate shoal-tests (integration tests: need root, containerd, runc, namespaces and cgroups of $T_NAME)"
  echo "SKIPPED under QEMU: doctests (cargo runs them for the host only; targets/test.sh runs them)"
  echo "resolver: http::tests::resolves_host_names_through_libc resolves localhost and [${RESOLVE:-no DNS names}] in the $T_ROUTE binary"
  SHOAL_UNDER_QEMU=$T_NAME SHOAL_TEST_RESOLVE_HOSTS=$RESOLVE \
    with_target_lock timeout "$RUN_TIMEOUT" "${test_cargo[@]}" test -q --target "$test_triple" "${extra[@]}" \
    --workspace --exclude shoal-tests --lib --bins --tests -- --test-threads 2

  # 3. The raft simulator, once it is merged.
  if [ -f manager/examples/raft_sim.rs ]; then
    echo "raft simulator: $SEEDS seeds under $T_QEMU"
    xb=()
    [ "$T_TOOLCHAIN" = nightly ] && xb=(-Z build-std=std,panic_abort)
    with_target_lock timeout "$RUN_TIMEOUT" "${CARGO[@]}" run -q --release --target "$T_TRIPLE" "${xb[@]}" \
      -p shoal-manager --features sim --example raft_sim -- --seeds "$SEEDS" --first-seed 1
  else
    echo "SKIPPED: raft simulator (manager/examples/raft_sim.rs is not in this tree yet)"
  fi
  summary+=("$(printf '%-9s %-34s ok  %4ds' "$T_NAME" "$T_TRIPLE" $((SECONDS - start)))")
done
echo
echo "======== QEMU summary"
printf '%s\n' "${summary[@]}"

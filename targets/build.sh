#!/usr/bin/env bash
# Builds static, stripped `shoal` release binaries for the seven release
# targets (default: all) into dist/shoal-linux-<arch>, then checks each one
# (no interpreter, no NEEDED entries, no symbol table, at most the size in
# targets/size-budget) and rewrites dist/SHA256SUMS.
#
#   targets/build.sh [TARGET...]   TARGET: amd64 arm64 386 mips64le ppc64le s390x arm-v7
#                                  (or the Rust triple)
#
# Installs what is missing (as root on Debian 12): the cross gcc packages,
# protobuf-compiler, binutils, the rustup targets, and for mips64le the
# nightly toolchain's rust-src. Routes and sizes: targets/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=targets/cross-targets.sh
source targets/cross-targets.sh
mapfile -t NAMES < <(cross_resolve "$@")

# --- prerequisites -----------------------------------------------------------
need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
command -v sha256sum >/dev/null 2>&1 || need+=(coreutils)
for WANT in "${NAMES[@]}"; do
  cross_lookup
  [ "$T_ROUTE" = musl-zig ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1 && need+=(python3-venv)
  [ "$T_PKG" = - ] && continue
  IFS=, read -ra pkgs <<<"$T_PKG"
  for pkg in "${pkgs[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
done
if [ ${#need[@]} -gt 0 ]; then
  echo "build: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "build: no Rust toolchain; install rustup (https://rustup.rs)" >&2; exit 1; }
for WANT in "${NAMES[@]}"; do
  cross_lookup
  [ "$T_ROUTE" = musl-zig ] || continue
  zig_env
  break
done
installed=$(rustup target list --installed)
for WANT in "${NAMES[@]}"; do
  cross_lookup
  if [ "$T_TOOLCHAIN" = nightly ]; then
    if ! rustup run nightly rustc -V >/dev/null 2>&1; then
      echo "build: installing the nightly toolchain (for $T_TRIPLE: -Z build-std)" >&2
      rustup toolchain install nightly --profile minimal --component rust-src
    elif ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
      echo "build: adding rust-src to nightly (for -Z build-std)" >&2
      rustup component add rust-src --toolchain nightly
    fi
    # The musl route links Rust's self-contained musl (crt objects, libc.a),
    # which comes with the target's rust-std component, also under build-std.
    if [ "$T_ROUTE" = musl ] && ! rustup target list --installed --toolchain nightly | grep -qx "$T_TRIPLE"; then
      echo "build: adding nightly target $T_TRIPLE (its self-contained musl)" >&2
      rustup target add --toolchain nightly "$T_TRIPLE"
    fi
  elif ! grep -qx "$T_TRIPLE" <<<"$installed"; then
    echo "build: adding rustup target $T_TRIPLE" >&2
    rustup target add "$T_TRIPLE"
  fi
done

# --- build and check ---------------------------------------------------------
mkdir -p dist
budget=$SIZE_BUDGET_BYTES
fail=0
for WANT in "${NAMES[@]}"; do
  cross_lookup
  cargo_for
  extra=()
  [ "$T_TOOLCHAIN" = nightly ] && extra=(-Z build-std=std,panic_abort -Z build-std-features=optimize_for_size)
  echo "== $T_NAME: $T_TRIPLE ($T_ROUTE, $T_TOOLCHAIN)"
  start=$SECONDS
  # Release-only rustflags (targets/cross-targets.sh), merged by cargo with
  # the target's own in .cargo/config.toml (linker, crt-static), which test
  # builds use too.
  extra+=(--config "target.$T_TRIPLE.rustflags=$(release_rustflags)")
  # Default features but those a target leaves out to fit the budget.
  features=(tls)
  [[ $NO_TLS12_TARGETS == *" $T_NAME "* ]] || features+=(tls12)
  [[ $NO_LEGACY_TARGETS == *" $T_NAME "* ]] || features+=(legacy)
  [[ $NO_PROBES_TARGETS == *" $T_NAME "* ]] || features+=(probes)
  [[ $NO_TEMPLATES_TARGETS == *" $T_NAME "* ]] || features+=(templates)
  [[ $NO_STACKS_TARGETS == *" $T_NAME "* ]] || features+=(stacks)
  extra+=(--no-default-features --features "$(IFS=,; echo "${features[*]}")")
  if [[ $SIZE_CRYPTO_TARGETS == *" $T_NAME "* ]]; then
    for c in $SIZE_CRYPTO_CRATES; do extra+=(--config "profile.release.package.$c.opt-level=\"z\""); done
  fi
  with_target_lock "${CARGO[@]}" build --release -q -p shoal-agent --bin shoal --target "$T_TRIPLE" "${extra[@]}"
  out=dist/shoal-linux-$T_NAME
  cp "${CARGO_TARGET_DIR:-target}/$T_TRIPLE/release/shoal" "$out.tmp"
  # zig's linker keeps MIPS's .pdr (procedure descriptors, ~350 KB, never
  # loaded) through --strip-all; GNU binutils' strip removes it.
  if [ "$T_ROUTE" = musl-zig ] && readelf -SW "$out.tmp" | grep -q ' \.pdr '; then
    "${T_PKG#binutils-}-strip" -R .pdr "$out.tmp"
  fi
  mv "$out.tmp" "$out"
  size=$(stat -c %s "$out")
  problems=()
  readelf -lW "$out" | grep -q 'Requesting program interpreter' && problems+=("has a program interpreter (dynamically linked)")
  readelf -dW "$out" | grep -q '(NEEDED)' && problems+=("has NEEDED entries: $(readelf -dW "$out" | grep '(NEEDED)' | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' ')")
  readelf -SW "$out" | grep -qE '\.symtab|\.debug_' && problems+=("not stripped (.symtab/.debug sections)")
  [ "$size" -le "$budget" ] || problems+=("$size bytes, over the budget of $budget bytes (targets/size-budget)")
  if [ ${#problems[@]} -gt 0 ]; then
    for p in "${problems[@]}"; do echo "FAIL $out: $p" >&2; done
    fail=1
  else
    printf 'ok   %-24s %9d bytes (%.2f MiB), static, stripped, %ds\n' "$out" "$size" "$(awk -v s="$size" 'BEGIN{print s/1048576}')" $((SECONDS - start))
  fi
done
(cd dist && sha256sum shoal-linux-* >SHA256SUMS)
echo "dist/SHA256SUMS written"
exit $fail

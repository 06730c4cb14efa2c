#!/usr/bin/env bash
# Image pull benchmark (issue #16): prints, asserts nothing.
# 1. Binary size per target with TLS: dist/ as built by targets/build.sh
#    (run that first for all seven; sizes of what is there are printed).
# 2. Registry bytes and wall time for 5 nodes (SHOAL_BENCH_NODES=N for
#    another count; network namespaces, real daemons and containerds)
#    pulling one image for a global service, with layer sharing (the
#    manager's blob cache) and without, over the bridge and over a 1 MB/s
#    uplink shared by all nodes (tests/tests/pull_bench.rs).
# 3. Resuming a 6 MiB layer cut at 50 % and 90 %: bytes fetched and time,
#    against the same pull uncut (image/tests/registry.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== binary sizes (dist/, with TLS)"
if ls dist/shoal-linux-* >/dev/null 2>&1; then
  for f in dist/shoal-linux-*; do
    printf '%-28s %9d bytes (%.2f MiB)\n' "$f" "$(stat -c %s "$f")" "$(awk -v s="$(stat -c %s "$f")" 'BEGIN{print s/1048576}')"
  done
else
  echo "no dist/ binaries: run targets/build.sh"
fi
echo "== pulls across nodes"
cargo build -q -p shoal-agent
SHOAL_REQUIRE_CONTAINERD=1 SHOAL_REQUIRE_NETNS=1 cargo test -q -p shoal-tests --test pull_bench -- --ignored --nocapture 2>&1 |
  grep -E "^pull:|panicked|timed out"
echo "== resumed download"
cargo test -q -p shoal-image --features tls --test registry blob_downloads_resume_after_cuts -- --nocapture 2>&1 |
  grep -E "^resume:|panicked"

#!/usr/bin/env bash
# Installs what Shoal needs to build and test on Debian 12 (as root), only
# what is missing: containerd, runc, busybox-static, protobuf-compiler,
# skopeo, docker-registry, iproute2, iptables, nftables (the data path's
# rules), conntrack (dropping flows of tasks that left), tcpdump (the
# encrypted overlay test captures the wire), openssl and apache2-utils'
# htpasswd (the HTTPS and basic-auth registry tests), systemd-analyze (the
# device installer's unit is verified), python3-prometheus-client (the
# metrics text is checked by Prometheus' parser), and a Rust toolchain.
set -euo pipefail
need=()
for pair in containerd:containerd runc:runc busybox:busybox-static protoc:protobuf-compiler skopeo:skopeo docker-registry:docker-registry ip:iproute2 iptables:iptables nft:nftables conntrack:conntrack tcpdump:tcpdump openssl:openssl htpasswd:apache2-utils systemd-analyze:systemd; do
  bin=${pair%%:*} pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
# The metrics test reads the text with Prometheus' own Python parser.
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || need+=(python3-prometheus-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian 12's own rustc (1.63) is too old for the dependencies; Shoal needs
# Rust >= 1.85 from rustup.
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
  echo "setup: no Rust toolchain found; install one with rustup (https://rustup.rs), Rust 1.85 or newer" >&2
  exit 1
fi

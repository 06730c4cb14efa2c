#!/bin/sh
# Builds a multi-arch OCI archive from the host's static busybox, for
# PLACEMENT AND PLATFORM-SELECTION TESTS ONLY: every platform's layer holds
# the *host* busybox binary; only the config claims another architecture, so
# the non-host entries will not run.
#
# usage: tests/lib/mkindex.sh OUT.tar [--tag TAG] [--name REF] [PLATFORM...]
#   PLATFORM  os/arch[/variant]; default: linux/amd64 linux/arm64 linux/arm/v7
#   --tag     org.opencontainers.image.ref.name of the root (default: latest)
#   --name    also record io.containerd.image.name=REF
#
# Layout: index.json -> one OCI image index (annotated with the tag) -> one
# OCI manifest per platform (platform in the index entry and in the config;
# arm64 written with variant v8) -> one shared uncompressed layer
# (bin/busybox, bin/sh -> busybox). Each config carries the label
# org.shoal.test.platform=<platform>. Push all of it with
#   skopeo copy --all --dest-tls-verify=false oci-archive:OUT.tar docker://127.0.0.1:PORT/NAME:TAG
# Needs GNU tar (--sort=name) and sha256sum. Output is reproducible for a
# given busybox binary and platform list.
set -eu

out=${1:?usage: mkindex.sh OUT.tar [--tag TAG] [--name REF] [PLATFORM...]}
shift
tag=latest
name=
while [ $# -gt 0 ]; do
    case "$1" in
    --tag) tag=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || set -- linux/amd64 linux/arm64 linux/arm/v7

busybox=${BUSYBOX:-/usr/bin/busybox}
[ -x "$busybox" ] || { echo "mkindex.sh: $busybox not found (set BUSYBOX=)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/oci/blobs/sha256" "$work/rootfs/bin"
cp "$busybox" "$work/rootfs/bin/busybox"
ln -s busybox "$work/rootfs/bin/sh"

# put FILE MEDIATYPE -> stores FILE as a blob, prints a descriptor's fields
put() {
    _d=$(sha256sum "$1" | cut -d' ' -f1)
    _s=$(wc -c <"$1" | tr -d ' ')
    cp "$1" "$work/oci/blobs/sha256/$_d"
    echo "\"mediaType\":\"$2\",\"digest\":\"sha256:$_d\",\"size\":$_s"
}

tar -C "$work/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$work/layer.tar" bin
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$(put "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)

entries=
for p in "$@"; do
    os=${p%%/*}
    rest=${p#*/}
    arch=${rest%%/*}
    variant=
    [ "$rest" != "$arch" ] && variant=${rest#*/}
    [ "$arch" = arm64 ] && [ -z "$variant" ] && variant=v8
    vjson=
    [ -n "$variant" ] && vjson=",\"variant\":\"$variant\""
    printf '{"architecture":"%s","os":"%s"%s,"config":{"Cmd":["sh"],"Env":["PATH=/bin"],"Labels":{"org.shoal.test.platform":"%s"}},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
        "$arch" "$os" "$vjson" "$p" "$diff_id" >"$work/config.json"
    config=$(put "$work/config.json" application/vnd.oci.image.config.v1+json)
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{%s},"layers":[{%s}]}' \
        "$config" "$layer" >"$work/manifest.json"
    manifest=$(put "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
    entry=$(printf '{%s,"platform":{"architecture":"%s","os":"%s"%s}}' "$manifest" "$arch" "$os" "$vjson")
    entries=${entries:+$entries,}$entry
done
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "$entries" >"$work/index.json"
index=$(put "$work/index.json" application/vnd.oci.image.index.v1+json)

ann="\"org.opencontainers.image.ref.name\":\"$tag\""
[ -n "$name" ] && ann="$ann,\"io.containerd.image.name\":\"$name\""
printf '{"schemaVersion":2,"manifests":[{%s,"annotations":{%s}}]}' "$index" "$ann" >"$work/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
tar -C "$work/oci" --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -cf "$out" oci-layout index.json blobs

#!/usr/bin/env bash
# Builds a deterministic one-layer OCI archive (oci-archive tar: oci-layout,
# index.json, blobs/sha256/...) from Debian's static busybox. No network.
#   tests/lib/mkimage.sh OUT.tar [NAME]
# NAME (default shoal.test/busybox:latest) goes into the index's
# org.opencontainers.image.ref.name annotation. MKIMAGE_GZIP=0 stores the
# layer uncompressed (default: gzip, so layer digest != diff id).
# MKIMAGE_HEALTHCHECK='{"Test":[...],...}' adds a Healthcheck to the config
# (Docker's HEALTHCHECK).
set -euo pipefail

out=${1:?usage: mkimage.sh OUT.tar [NAME]}
name=${2:-shoal.test/busybox:latest}
busybox=${BUSYBOX:-/usr/bin/busybox}
gz=${MKIMAGE_GZIP:-1}
healthcheck=${MKIMAGE_HEALTHCHECK:+,\"Healthcheck\":$MKIMAGE_HEALTHCHECK}

[ -x "$busybox" ] || { echo "mkimage.sh: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
    echo "mkimage.sh: $busybox must be a static busybox" >&2
    exit 1
fi

case "$(uname -m)" in
x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; armv7l) arch=arm ;; i?86) arch=386 ;; *) arch=$(uname -m) ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
cp "$busybox" "$root/bin/busybox"
for a in sh ash sleep echo cat httpd ls true false env id ps kill mkdir rm touch \
    wget nc hostname pwd test printf grep sed head tail wc uname date seq; do
    ln -s busybox "$root/bin/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
echo 'hello from shoal' >"$root/www/index.html"
chmod 1777 "$root/tmp"
find "$root" -exec touch -h -d @0 {} +

mkdir -p "$work/oci/blobs/sha256"
blob() { # FILE -> prints "digest size", moves FILE into blobs
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    mv "$1" "$work/oci/blobs/sha256/$d"
    echo "sha256:$d $s"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$root" -cf "$work/layer.tar" .
diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
if [ "$gz" = 1 ]; then
    gzip -n -9 "$work/layer.tar"
    layer_file="$work/layer.tar.gz"
    layer_mt=application/vnd.oci.image.layer.v1.tar+gzip
else
    layer_file="$work/layer.tar"
    layer_mt=application/vnd.oci.image.layer.v1.tar
fi
read -r layer_digest layer_size < <(blob "$layer_file")

printf '%s' "{\"architecture\":\"$arch\",\"config\":{\"Cmd\":[\"sh\"],\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"WorkingDir\":\"/\"$healthcheck},\"created\":\"1970-01-01T00:00:00Z\",\"os\":\"linux\",\"rootfs\":{\"diff_ids\":[\"$diff_id\"],\"type\":\"layers\"}}" >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"$layer_mt\",\"digest\":\"$layer_digest\",\"size\":$layer_size}]}" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$manifest_digest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$name\"},\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"}}]}" >"$work/oci/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"
find "$work/oci" -exec touch -h -d @0 {} +

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu \
    -C "$work/oci" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
echo "$out: $name manifest $manifest_digest layer $layer_digest diff_id $diff_id" >&2

#!/bin/sh
# A throwaway local registry (docker distribution 2.x, `docker-registry`) for
# tests: plain HTTP on 127.0.0.1 (or ADDR), storage under DIR.
#
# Run:    tests/lib/registry.sh start DIR PORT [ADDR]  # returns once /v2/ answers
#         tests/lib/registry.sh stop DIR
# Source: . tests/lib/registry.sh; registry_start DIR PORT [ADDR]; registry_stop DIR
#
# ADDR (default 127.0.0.1) is the IPv4 address to listen on, e.g. a cluster
# bridge's address so that daemons in network namespaces can pull.
#
# Optional, from the environment: REGISTRY_TLS_CERT and REGISTRY_TLS_KEY
# (PEM files: HTTPS instead of plain HTTP), REGISTRY_HTPASSWD (a bcrypt
# htpasswd file: basic auth), or REGISTRY_TOKEN_REALM, _SERVICE, _ISSUER and
# _ROOTCERTS (token authentication against a token server). With either, readiness is the port accepting
# connections rather than /v2/ answering 200.
#
# DIR receives config.yml, storage/, registry.log and registry.pid. Both are
# idempotent; `stop` kills only the pid recorded by `start`, and only while
# it is still that registry. Push with e.g.
#   skopeo copy --dest-tls-verify=false oci-archive:img.tar docker://127.0.0.1:PORT/name:tag

REGISTRY_BIN=${REGISTRY_BIN:-docker-registry}

# _registry_probe PORT [ADDR]: whether http://ADDR:PORT/v2/ answers 200 (ADDR
# defaults to 127.0.0.1). Uses
# curl or wget when present, else bash's /dev/tcp (a fresh Debian has
# neither; static busybox wget crashes on some hosts, so it is not used).
_registry_probe() {
    _a=${2:-127.0.0.1}
    if command -v curl >/dev/null 2>&1; then
        curl -fs -m 1 -o /dev/null "http://$_a:$1/v2/"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -T 1 -O /dev/null "http://$_a:$1/v2/"
    else
        timeout 2 bash -c 'exec 3<>"/dev/tcp/$2/$1" && printf "GET /v2/ HTTP/1.0\r\n\r\n" >&3 && head -c 12 <&3' _ "$1" "$_a" 2>/dev/null |
            grep -q " 200"
    fi
}

# _registry_alive DIR: whether the registry recorded in DIR/registry.pid runs
# (checked against its command line, so a reused pid is never mistaken).
_registry_alive() {
    [ -f "$1/registry.pid" ] || return 1
    _p=$(cat "$1/registry.pid" 2>/dev/null) || return 1
    [ -n "$_p" ] && kill -0 "$_p" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$_p/cmdline" 2>/dev/null | grep -qF "serve $1/config.yml"
}

registry_start() {
    _dir=${1:?usage: registry_start DIR PORT [ADDR]}
    _port=${2:?usage: registry_start DIR PORT [ADDR]}
    _addr=${3:-127.0.0.1}
    mkdir -p "$_dir/storage" || return 1
    _dir=$(cd "$_dir" && pwd)
    # Idempotent: an already running registry for DIR is left alone.
    if _registry_alive "$_dir"; then
        return 0
    fi
    cat >"$_dir/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $_dir/storage
  delete:
    enabled: true
http:
  addr: $_addr:$_port
CONF
    if [ -n "${REGISTRY_TLS_CERT:-}" ]; then
        printf '  tls:\n    certificate: %s\n    key: %s\n' "$REGISTRY_TLS_CERT" "$REGISTRY_TLS_KEY" >>"$_dir/config.yml"
    fi
    if [ -n "${REGISTRY_HTPASSWD:-}" ]; then
        printf 'auth:\n  htpasswd:\n    realm: shoal-test\n    path: %s\n' "$REGISTRY_HTPASSWD" >>"$_dir/config.yml"
    elif [ -n "${REGISTRY_TOKEN_REALM:-}" ]; then
        printf 'auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n' \
            "$REGISTRY_TOKEN_REALM" "$REGISTRY_TOKEN_SERVICE" "$REGISTRY_TOKEN_ISSUER" "$REGISTRY_TOKEN_ROOTCERTS" >>"$_dir/config.yml"
    fi
    "$REGISTRY_BIN" serve "$_dir/config.yml" >"$_dir/registry.log" 2>&1 &
    echo $! >"$_dir/registry.pid"
    # Wait up to 10 s for the API to answer.
    _i=0
    while [ "$_i" -lt 100 ]; do
        if ! kill -0 "$(cat "$_dir/registry.pid")" 2>/dev/null; then
            echo "registry exited; log:" >&2
            cat "$_dir/registry.log" >&2
            return 1
        fi
        if [ -n "${REGISTRY_TLS_CERT:-}${REGISTRY_HTPASSWD:-}${REGISTRY_TOKEN_REALM:-}" ]; then
            if timeout 2 bash -c 'exec 3<>"/dev/tcp/$2/$1"' _ "$_port" "$_addr" 2>/dev/null; then
                return 0
            fi
        elif _registry_probe "$_port" "$_addr"; then
            return 0
        fi
        sleep 0.1
        _i=$((_i + 1))
    done
    echo "registry on $_addr:$_port did not answer within 10 s; log:" >&2
    cat "$_dir/registry.log" >&2
    registry_stop "$_dir"
    return 1
}

registry_stop() {
    _dir=${1:?usage: registry_stop DIR}
    [ -d "$_dir" ] || return 0
    _dir=$(cd "$_dir" && pwd)
    if ! _registry_alive "$_dir"; then
        rm -f "$_dir/registry.pid"
        return 0
    fi
    _pid=$(cat "$_dir/registry.pid")
    kill "$_pid" 2>/dev/null || true
    _i=0
    while kill -0 "$_pid" 2>/dev/null && [ "$_i" -lt 50 ]; do
        sleep 0.1
        _i=$((_i + 1))
    done
    kill -9 "$_pid" 2>/dev/null || true
    rm -f "$_dir/registry.pid"
    return 0
}

case "${0##*/}" in
registry.sh)
    set -eu
    cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
    start) registry_start "$@" ;;
    stop) registry_stop "$@" ;;
    *)
        echo "usage: $0 start DIR PORT [ADDR] | stop DIR" >&2
        exit 2
        ;;
    esac
    ;;
esac

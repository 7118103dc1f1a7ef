#!/usr/bin/env bash
# Installs what the end-to-end tests need on a fresh Debian machine with Go:
# Debian packages (a C toolchain for the race detector, iproute2 and
# iptables for the network-namespace harness, Redis as an opaque-TCP peer,
# Prometheus's server and promtool, Chromium for the dashboard's browser
# test)
# and Go tools built into .cache/bin (h2spec, the gRPC interop client and
# server). Idempotent: what is present is not reinstalled.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.cache/bin"
mkdir -p "$bin"

sudo=""
[ "$(id -u)" = 0 ] || sudo=sudo

need=()
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v iptables >/dev/null || need+=(iptables)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
# Prometheus: promtool checks every /metrics output, and the server scrapes
# a running mesh in an end-to-end test.
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need+=(prometheus)
# Chromium: the dashboard's end-to-end test drives it headless over the
# DevTools protocol.
{ command -v chromium >/dev/null || command -v chromium-browser >/dev/null; } || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
	echo "installing Debian packages: ${need[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The Redis package starts a server on the default port; the tests start
# their own inside network namespaces and need none on the host.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
	$sudo systemctl stop redis-server || true
fi
# So does the Prometheus package (on 9090); the test starts its own on
# loopback with its own configuration and storage.
if command -v systemctl >/dev/null && systemctl is-enabled --quiet prometheus 2>/dev/null; then
	$sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
elif command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
	$sudo systemctl stop prometheus || true
fi

# Versions are pinned: the gRPC interop binaries match the grpc module in
# go.mod.
grpc_version=$(cd "$root" && go list -m -f '{{.Version}}' google.golang.org/grpc)
install_go_tool() { # name package@version [installed-name]
	local name=$1 pkg=$2 as=${3:-$1}
	[ -x "$bin/$as" ] && return 0
	echo "building $pkg"
	local tmp
	tmp=$(mktemp -d)
	GOBIN="$tmp" GOFLAGS=-buildvcs=false go install "$pkg"
	mv "$tmp/$name" "$bin/$as"
	rm -rf "$tmp"
}
install_go_tool h2spec github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
install_go_tool client "google.golang.org/grpc/interop/client@$grpc_version" grpc-interop-client
install_go_tool server "google.golang.org/grpc/interop/server@$grpc_version" grpc-interop-server

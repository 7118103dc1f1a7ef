#!/usr/bin/env bash
# bench/setup.sh installs what `go run ./bench/sidecars` needs, only what is
# missing: wrk, nginx and HAProxy from Debian's packages, and fortio and ghz
# (pinned versions) into <repo>/.cache/bin. Safe to run again and again.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gobin="$repo/.cache/bin"
mkdir -p "$gobin"

sudo=""
if [ "$(id -u)" != 0 ]; then sudo=sudo; fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
# nginx and haproxy live in /usr/sbin, which a non-root PATH may lack.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
	echo "bench/setup.sh: installing ${missing[*]} with apt-get"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
	# The Debian nginx package starts a system nginx on port 80; the
	# benchmark runs its own instances and needs no system service.
	if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
		$sudo systemctl stop nginx || true
	fi
fi

# go_tool NAME MODULE@VERSION installs MODULE@VERSION into .cache/bin unless
# NAME there already reports VERSION.
go_tool() {
	local name=$1 pkg=$2 version=${2##*@}
	if [ -x "$gobin/$name" ] && go version -m "$gobin/$name" 2>/dev/null | grep -q "[[:space:]]$version[[:space:]]*\(h1:\|$\)"; then
		return
	fi
	echo "bench/setup.sh: installing $pkg into $gobin"
	GOBIN="$gobin" go install "$pkg"
}
# fortio: newer versions need a module the proxy refuses; v1.68.2 works.
go_tool fortio fortio.org/fortio@v1.68.2
go_tool ghz github.com/bojand/ghz/cmd/ghz@v0.93.0

echo "bench/setup.sh: wrk $(command -v wrk), nginx $(command -v nginx || echo /usr/sbin/nginx), haproxy $(command -v haproxy || echo /usr/sbin/haproxy), fortio and ghz in $gobin"

#!/usr/bin/env bash
# k8s-test-env.sh: a real Kubernetes control plane on loopback for tests.
#
#   scripts/k8s-test-env.sh build        build etcd, kube-apiserver,
#                                        kube-controller-manager and kubectl
#   scripts/k8s-test-env.sh start <dir>  start them, state and logs in <dir>
#   scripts/k8s-test-env.sh stop <dir>   stop what start started (idempotent)
#
# The binaries are built from Go modules (k8s.io/kubernetes and
# go.etcd.io/etcd/server/v3) pinned by the build-only modules under
# scripts/k8s-test-env/, and cached in .cache/k8s/<kubernetes-version>/bin
# together with their module downloads. Nothing is installed system-wide and
# everything listens on 127.0.0.1 only. There is no kubelet and no scheduler.
#
# Environment:
#   GO                    the go command (default: go)
#   K8S_TEST_ENV_CACHE    cache directory (default: <repo>/.cache/k8s)
#   K8S_TEST_ENV_TIMEOUT  seconds start waits for readiness (default: 120)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODDIR=$ROOT/scripts/k8s-test-env
GO=${GO:-go}
CACHE=${K8S_TEST_ENV_CACHE:-$ROOT/.cache/k8s}
CACHE=$(mkdir -p "$CACHE" && cd "$CACHE" && pwd -P)
TIMEOUT=${K8S_TEST_ENV_TIMEOUT:-120}

die() { echo "k8s-test-env: $*" >&2; exit 1; }
log() { echo "k8s-test-env: $*" >&2; }

# required_version prints the version a build-only module requires of a module.
required_version() {
	local v
	v=$(awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m && $2 ~ /^v/ { print $2 }' "$1")
	[ -n "$v" ] || die "$1 does not require $2"
	echo "$v"
}

K8S_VERSION=$(required_version "$MODDIR/kubernetes/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(required_version "$MODDIR/etcd/go.mod" go.etcd.io/etcd/server/v3)
BIN=$CACHE/$K8S_VERSION/bin

# go_env runs go with the module downloads kept in the cache directory.
go_env() {
	GOMODCACHE=$CACHE/mod GOFLAGS=-modcacherw GOTOOLCHAIN=local "$GO" "$@"
}

# has_version reports whether binary $1 exists and what it prints when run
# with the remaining arguments contains $2, so that a version bump in the
# build-only modules rebuilds it.
has_version() {
	local out
	[ -x "$1" ] && out=$("$1" "${@:3}" 2>/dev/null) && [[ $out == *"$2"* ]]
}

cmd_build() {
	mkdir -p "$BIN"
	local start=$SECONDS
	if has_version "$BIN/etcd" "etcd Version: ${ETCD_VERSION#v}" --version; then
		log "etcd $ETCD_VERSION already built"
	else
		log "building etcd $ETCD_VERSION"
		(cd "$MODDIR/etcd" && go_env build -trimpath -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3)
		mv "$BIN/etcd.tmp" "$BIN/etcd"
	fi

	# The same version stamps the Kubernetes release build sets, so that
	# the binaries report the module version instead of v0.0.0-master.
	local minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	local ldflags="" pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	local c
	for c in kube-apiserver kube-controller-manager kubectl; do
		local want="Kubernetes $K8S_VERSION"
		[ "$c" = kubectl ] && want="Client Version: $K8S_VERSION"
		local check=(--version)
		[ "$c" = kubectl ] && check=(version --client)
		if has_version "$BIN/$c" "$want" "${check[@]}"; then
			log "$c $K8S_VERSION already built"
			continue
		fi
		log "building $c $K8S_VERSION"
		(cd "$MODDIR/kubernetes" && go_env build -trimpath -ldflags "$ldflags" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
		mv "$BIN/$c.tmp" "$BIN/$c"
	done
	log "binaries in $BIN ($((SECONDS - start))s)"
}

# free_port prints a TCP port on 127.0.0.1 that nothing listens on. The port
# is released before use, so another process could take it first; start then
# fails with the port named in the component's log.
free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# running reports whether the process in PID file $1 is alive and still runs
# the binary named in the file's second line (a PID can be reused).
running() {
	local pid exe
	[ -f "$1" ] || return 1
	{ read -r pid; read -r exe; } <"$1" || return 1
	[ -n "$pid" ] && [ -n "$exe" ] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]
}

# launch starts binary $2 with the remaining arguments in the background,
# logging to <dir>/logs/$1.log and recording its PID in <dir>/run/$1.pid.
launch() {
	local name=$1 exe=$2
	shift 2
	# setsid: a Ctrl-C in the terminal that ran start does not reach them.
	setsid "$exe" "$@" >"$DIR/logs/$name.log" 2>&1 </dev/null &
	printf '%s\n%s\n' "$!" "$(readlink -f "$exe")" >"$DIR/run/$name.pid"
}

# stop_one stops the process of PID file $1: SIGTERM, then SIGKILL after 15s.
stop_one() {
	local f=$1 pid
	if running "$f"; then
		pid=$(head -n1 "$f")
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + 15))
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$(basename "$f" .pid) did not stop on SIGTERM, killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		log "stopped $(basename "$f" .pid) (pid $pid)"
	fi
	rm -f "$f"
}

cmd_stop() {
	DIR=$1
	[ -d "$DIR/run" ] || return 0
	local name
	for name in kube-controller-manager kube-apiserver etcd; do
		stop_one "$DIR/run/$name.pid"
	done
}

# wait_for runs "$@" until it succeeds; it fails once component $1 exits or
# the deadline passes, showing the end of that component's log.
wait_for() {
	local name=$1 what=$2
	shift 2
	while ! "$@" >/dev/null 2>&1; do
		if ! running "$DIR/run/$name.pid"; then
			tail -n 30 "$DIR/logs/$name.log" >&2 || true
			die "$name exited while waiting for $what; log: $DIR/logs/$name.log"
		fi
		if [ $SECONDS -ge "$DEADLINE" ]; then
			tail -n 30 "$DIR/logs/$name.log" >&2 || true
			die "timed out after ${TIMEOUT}s waiting for $what; log: $DIR/logs/$name.log"
		fi
		sleep 0.5
	done
}

cmd_start() {
	DIR=$(mkdir -p "$1" && cd "$1" && pwd)
	local c
	for c in etcd kube-apiserver kube-controller-manager kubectl; do
		[ -x "$BIN/$c" ] || die "$BIN/$c is missing: run '$0 build' first"
	done
	for c in etcd kube-apiserver kube-controller-manager; do
		if running "$DIR/run/$c.pid"; then
			die "$c is already running from $DIR: run '$0 stop $DIR' first"
		fi
	done

	# A fresh cluster each time: old state would hold objects and tokens
	# signed by a key this start replaces.
	rm -rf "$DIR/etcd-data" "$DIR/pki" "$DIR/run" "$DIR/logs" "$DIR/kubeconfig" "$DIR/env"
	mkdir -p "$DIR/logs" "$DIR/run" "$DIR/pki/apiserver"
	chmod 700 "$DIR/pki"
	# Whatever goes wrong from here on stops what was started.
	trap 'cmd_stop "$DIR"' EXIT
	trap 'exit 130' INT TERM
	DEADLINE=$((SECONDS + TIMEOUT))

	# Service-account token signing key pair and the static tokens: one for
	# the admin (system:masters) and one for kube-controller-manager, whose
	# bootstrap RBAC role lets it act through per-controller service accounts.
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$DIR/pki/sa.key" 2>/dev/null
	openssl pkey -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub"
	local admin_token kcm_token
	admin_token=$(openssl rand -hex 32)
	kcm_token=$(openssl rand -hex 32)
	(
		umask 077
		printf '%s,admin,admin,"system:masters"\n' "$admin_token" >"$DIR/pki/tokens.csv"
		printf '%s,system:kube-controller-manager,system:kube-controller-manager\n' "$kcm_token" >>"$DIR/pki/tokens.csv"
	)

	local etcd_port etcd_peer_port api_port
	etcd_port=$(free_port)
	etcd_peer_port=$(free_port)
	api_port=$(free_port)
	while [ "$etcd_peer_port" = "$etcd_port" ]; do etcd_peer_port=$(free_port); done
	while [ "$api_port" = "$etcd_port" ] || [ "$api_port" = "$etcd_peer_port" ]; do api_port=$(free_port); done
	local server=https://127.0.0.1:$api_port

	launch etcd "$BIN/etcd" \
		--name=k8s-test-env \
		--data-dir="$DIR/etcd-data" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-cluster="k8s-test-env=http://127.0.0.1:$etcd_peer_port" \
		--log-level=warn
	wait_for etcd "etcd on 127.0.0.1:$etcd_port" curl -fsS "http://127.0.0.1:$etcd_port/health"

	# A loopback advertise address is refused by the endpoint reconciler,
	# so the "kubernetes" Service has no endpoints here; nothing in the
	# cluster would use them without a kubelet.
	launch kube-apiserver "$BIN/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 \
		--endpoint-reconciler-type=none \
		--secure-port="$api_port" \
		--cert-dir="$DIR/pki/apiserver" \
		--service-account-issuer=https://kubernetes.default.svc \
		--service-account-key-file="$DIR/pki/sa.pub" \
		--service-account-signing-key-file="$DIR/pki/sa.key" \
		--token-auth-file="$DIR/pki/tokens.csv" \
		--authorization-mode=RBAC \
		--service-cluster-ip-range=10.96.0.0/16
	wait_for kube-apiserver "the apiserver's serving certificate" test -s "$DIR/pki/apiserver/apiserver.crt"

	# The serving certificate generated through --cert-dir is followed in
	# the same file by the CA that signed it.
	local ca
	ca=$(base64 -w0 "$DIR/pki/apiserver/apiserver.crt")
	write_kubeconfig "$DIR/kubeconfig" admin "$admin_token"
	write_kubeconfig "$DIR/pki/kube-controller-manager.kubeconfig" kube-controller-manager "$kcm_token"
	wait_for kube-apiserver "$server/readyz" "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" get --raw /readyz

	launch kube-controller-manager "$BIN/kube-controller-manager" \
		--kubeconfig="$DIR/pki/kube-controller-manager.kubeconfig" \
		--use-service-account-credentials=true \
		--controllers=serviceaccount-controller,endpointslice-controller \
		--leader-elect=false \
		--secure-port=0
	# The service-account controller creates "default" in every namespace;
	# its presence shows the controller manager is working.
	wait_for kube-controller-manager "the default ServiceAccount" \
		"$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get serviceaccount default

	cat >"$DIR/env" <<EOF
# Source this file to use the test cluster started by k8s-test-env.sh.
export KUBECONFIG=$DIR/kubeconfig
export K8S_TEST_ENV_SERVER=$server
export K8S_TEST_ENV_BIN_DIR=$BIN
export K8S_TEST_ENV_ETCD=http://127.0.0.1:$etcd_port
EOF
	trap - EXIT INT TERM
	cat <<EOF
Kubernetes $K8S_VERSION is ready at $server (etcd $ETCD_VERSION at 127.0.0.1:$etcd_port).
  kubectl:  $BIN/kubectl --kubeconfig $DIR/kubeconfig get namespaces
  or:       . $DIR/env && $BIN/kubectl get namespaces
  logs:     $DIR/logs
  stop:     $0 stop $DIR
EOF
}

# write_kubeconfig writes a kubeconfig for user $2 with bearer token $3.
write_kubeconfig() {
	(
		umask 077
		cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: k8s-test-env
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $3
contexts:
- name: k8s-test-env
  context:
    cluster: k8s-test-env
    user: $2
current-context: k8s-test-env
EOF
	)
}

usage() {
	sed -n '2,8s/^# \{0,1\}//p' "$0" >&2
	exit 2
}

case "${1:-}" in
build)
	[ $# -eq 1 ] || usage
	cmd_build
	;;
start)
	[ $# -eq 2 ] || usage
	cmd_start "$2"
	;;
stop)
	[ $# -eq 2 ] || usage
	cmd_stop "$2"
	;;
*) usage ;;
esac

#!/usr/bin/env bash
# Build the local cluster's pinned binaries through the Go module proxy.
#
# No release download site is reachable from our machines, so etcd, the
# Kubernetes control plane, kubectl, helm and kwok are compiled from their
# Go modules. The result is cached outside the repository, keyed by the
# versions, and reused by every later run (and by CI on the same machine).
#
# The real node's parts (kubelet, kube-proxy: same module and stamping as
# the control plane; metrics-server, crictl and kube-router: their own
# modules) are built only with --real-node, so a kwok-only cluster never
# pays for them.
#
# The autoscalers (KEDA's operator and metrics API server, Karpenter's kwok
# provider) are built only with --autoscalers (both), --keda or --karpenter.
# Their versions are stamped in
# files beside the binaries (like metrics-server), so a new version rebuilds
# only that part and never the control plane.
#
# Prints the binary folder on its last line of stdout.
# Binaries found in $KUBEBUILDER_ASSETS (envtest's convention) are used
# instead of building them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_kwok-${KWOK_VERSION}"
cache_root=${MSO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/modelservice-operator}
out="$cache_root/cluster/$key"
bin="$out/bin"
mkdir -p "$bin"
real_node=false
keda=false
karpenter=false
for arg in "$@"; do
  case $arg in
    --real-node) real_node=true ;;
    --autoscalers) keda=true; karpenter=true ;;
    --keda) keda=true ;;
    --karpenter) karpenter=true ;;
    *) echo "usage: $0 [--real-node] [--autoscalers | --keda | --karpenter]" >&2; exit 2 ;;
  esac
done
log() { echo "[build-binaries] $*" >&2; }

have() { [ -x "$bin/$1" ]; }
from_assets() {
  # envtest's KUBEBUILDER_ASSETS holds etcd, kube-apiserver and kubectl.
  local name=$1
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then
    ln -sf "$KUBEBUILDER_ASSETS/$name" "$bin/$name"
    return 0
  fi
  return 1
}

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

build_kubernetes() {
  local wanted=() c
  local parts=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  $real_node && parts+=(kubelet kube-proxy)
  for c in "${parts[@]}"; do
    have "$c" || from_assets "$c" || wanted+=("$c")
  done
  [ ${#wanted[@]} -eq 0 ] && return 0
  log "building ${wanted[*]} ${K8S_VERSION} (cold: tens of minutes on 2 cores)"
  local mod="$out/src/kubernetes"
  mkdir -p "$mod"
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local staging=${K8S_VERSION/v1./v0.}
  {
    echo "module local/cluster-binaries/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    # k8s.io/kubernetes points its staging modules at local paths; pin
    # each one it requires as v0.0.0 to the matching published release.
    grep -E '^\s+k8s\.io/[a-z0-9-]+ v0\.0\.0\s*$' "$gomod" | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
    echo
    echo "tool ("
    for c in "${wanted[@]}"; do echo "  k8s.io/kubernetes/cmd/$c"; done
    echo ")"
  } > "$mod/go.mod"
  (cd "$mod" && go mod tidy >&2)
  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in $pkg $cgo; do
    ld+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=${build_date}"
  done
  local pkgs=()
  for c in "${wanted[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$bin/" "${pkgs[@]}")
}

build_etcd() {
  have etcd || from_assets etcd && return 0
  log "building etcd ${ETCD_VERSION}"
  local mod="$out/src/etcd"
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/etcd >&2; } \
    && go get "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}

build_helm() {
  have helm && return 0
  log "building helm ${HELM_VERSION}"
  local mod="$out/src/helm" minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/helm >&2; } \
    && go get "helm.sh/helm/v3@${HELM_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor}" \
       -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
}

build_kwok() {
  have kwok && [ -d "$out/kwok-stages" ] && return 0
  log "building kwok ${KWOK_VERSION}"
  local mod="$out/src/kwok"
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/kwok >&2; } \
    && go get "sigs.k8s.io/kwok@${KWOK_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  local src
  src=$(cd "$mod" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  rm -rf "$out/kwok-stages"
  cp -r "$src/kustomize/stage" "$out/kwok-stages"
  chmod -R u+w "$out/kwok-stages"
}

build_metrics_server() {
  # The version is not part of the cache key (the key names the control
  # plane); a stamp file beside the binary records it instead.
  have metrics-server && [ "$(cat "$bin/metrics-server.version" 2>/dev/null)" = "$METRICS_SERVER_VERSION" ] && return 0
  log "building metrics-server ${METRICS_SERVER_VERSION}"
  # metrics-server stamps client-go's version package (its Makefile's VERSION_LDFLAGS).
  local mod="$out/src/metrics-server" v=k8s.io/client-go/pkg/version
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/metrics-server >&2; } \
    && go get "sigs.k8s.io/metrics-server@${METRICS_SERVER_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X $v.gitVersion=${METRICS_SERVER_VERSION} -X $v.gitTreeState=clean" \
       -o "$bin/metrics-server" sigs.k8s.io/metrics-server/cmd/metrics-server)
  echo "$METRICS_SERVER_VERSION" > "$bin/metrics-server.version"
}

build_crictl() {
  # crictl lets `down` stop the real node's pods through the CRI (CNI
  # teardown included) instead of killing shims behind containerd's back.
  have crictl && [ "$(cat "$bin/crictl.version" 2>/dev/null)" = "$CRICTL_VERSION" ] && return 0
  log "building crictl ${CRICTL_VERSION}"
  local mod="$out/src/cri-tools"
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/cri-tools >&2; } \
    && go get "sigs.k8s.io/cri-tools@${CRICTL_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION}" \
       -o "$bin/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
  echo "$CRICTL_VERSION" > "$bin/crictl.version"
}

stamped() { have "$1" && [ "$(cat "$bin/$1.version" 2>/dev/null)" = "$2" ]; }

build_kube_router() {
  # kube-router, run on the real node as its network policy controller only
  # (--run-firewall, no router, no service proxy): NetworkPolicies enforced
  # with iptables and ipsets. Its Makefile stamps pkg/version the same way.
  stamped kube-router "$KUBE_ROUTER_VERSION" && return 0
  log "building kube-router ${KUBE_ROUTER_VERSION} (cold: about 6 CPU-minutes)"
  local mod="$out/src/kube-router" v=github.com/cloudnativelabs/kube-router/v2/pkg/version
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/kube-router >&2; } \
    && go get "github.com/cloudnativelabs/kube-router/v2@${KUBE_ROUTER_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X $v.Version=${KUBE_ROUTER_VERSION} -X $v.BuildDate=${build_date}" \
       -o "$bin/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
  echo "$KUBE_ROUTER_VERSION" > "$bin/kube-router.version"
}

keda_config() {
  # KEDA's CRDs and manifests (keda-config/): the ScaledObject API can be served for the
  # operator's tests without KEDA running. A module download, no build.
  [ -d "$out/keda-config" ] && return 0
  local src
  src=$(cd "$out" && go mod download -json "github.com/kedacore/keda/v2@${KEDA_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp -r "$src/config" "$out/keda-config"
  chmod -R u+w "$out/keda-config"
}

build_keda() {
  # keda (operator) and keda-adapter (the metrics API server behind
  # external.metrics.k8s.io); the admission webhooks are not needed. The CRDs
  # and the adapter's manifests come from the same module (keda-config/).
  # Only the scalers in KEDA_SCALERS are linked (keda_lean.py): all of them
  # are 3,700 packages and 25 CPU-minutes cold; these, 2,000 and 12.5.
  local stamp="${KEDA_VERSION} scalers=${KEDA_SCALERS// /,}"
  stamped keda "$stamp" && stamped keda-adapter "$stamp" && [ -d "$out/keda-config" ] && return 0
  log "building keda ${KEDA_VERSION} with the scalers ${KEDA_SCALERS} (cold: docs/measurements.md)"
  local mod="$out/src/keda" v=github.com/kedacore/keda/v2/version
  mkdir -p "$mod"
  local src
  src=$(cd "$mod" && go mod download -json "github.com/kedacore/keda/v2@${KEDA_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  # A trimmed copy of the module, which the build uses through a replace.
  rm -rf "$mod/keda"
  cp -r "$src" "$mod/keda"
  chmod -R u+w "$mod/keda"
  if [ "$KEDA_SCALERS" != all ]; then
    # shellcheck disable=SC2086 # one argument per scaler
    python3 "$here/keda_lean.py" "$mod/keda" $KEDA_SCALERS
  fi
  {
    echo "module local/cluster-binaries/keda"
    echo
    grep -E '^go [0-9]' "$mod/keda/go.mod"
    echo
    echo "require github.com/kedacore/keda/v2 ${KEDA_VERSION}"
    echo
    # A replace in KEDA's own go.mod (a pre-release it needs) applies only
    # there: copy it, or the build resolves the wrong version.
    grep -E '^replace ' "$mod/keda/go.mod" || true
    echo "replace github.com/kedacore/keda/v2 => ./keda"
    echo
    echo "tool ("
    echo "  github.com/kedacore/keda/v2/cmd/operator"
    echo "  github.com/kedacore/keda/v2/cmd/adapter"
    echo ")"
  } > "$mod/go.mod"
  (cd "$mod" && go mod tidy >&2)
  local ld="-s -w -X $v.Version=${KEDA_VERSION#v} -X $v.GitCommit=${KEDA_VERSION}"
  (cd "$mod" && go build -trimpath -ldflags "$ld" -o "$bin/keda" github.com/kedacore/keda/v2/cmd/operator \
    && go build -trimpath -ldflags "$ld" -o "$bin/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter)
  rm -rf "$out/keda-config"
  cp -r "$mod/keda/config" "$out/keda-config"
  chmod -R u+w "$out/keda-config"
  echo "$stamp" > "$bin/keda.version"
  echo "$stamp" > "$bin/keda-adapter.version"
}

build_karpenter() {
  # Karpenter with its kwok cloud provider: NodeClaims become kwok nodes
  # (label kwok.x-k8s.io/node=fake), which the local kwok then runs.
  stamped karpenter-kwok "$KARPENTER_VERSION" && [ -d "$out/karpenter-crds" ] && return 0
  log "building karpenter (kwok provider) ${KARPENTER_VERSION} (cold: about 4 min)"
  local mod="$out/src/karpenter"
  mkdir -p "$mod"
  (cd "$mod" && { [ -f go.mod ] || go mod init local/cluster-binaries/karpenter >&2; } \
    && go get "sigs.k8s.io/karpenter@${KARPENTER_VERSION}" >&2 \
    && go build -trimpath -ldflags "-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=${KARPENTER_VERSION}" \
       -o "$bin/karpenter-kwok" sigs.k8s.io/karpenter/kwok)
  local src
  src=$(cd "$mod" && go list -m -f '{{.Dir}}' sigs.k8s.io/karpenter)
  rm -rf "$out/karpenter-crds"
  mkdir -p "$out/karpenter-crds"
  cp "$src"/kwok/charts/crds/*.yaml "$src"/kwok/apis/crds/*.yaml "$out/karpenter-crds/"
  chmod -R u+w "$out/karpenter-crds"
  echo "$KARPENTER_VERSION" > "$bin/karpenter-kwok.version"
}

build_etcd
build_helm
build_kwok
build_kubernetes
$real_node && build_metrics_server
$real_node && build_crictl
$real_node && build_kube_router
$karpenter && build_karpenter
if $karpenter || $keda; then keda_config; fi
$keda && build_keda
echo "$bin"

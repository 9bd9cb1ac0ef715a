#!/usr/bin/env bash
# Runs the whole mesh on this machine: installs what is missing (redis-server),
# builds tickmesh and runs `tickmesh dev` on 127.0.0.1:50051 with a Redis of
# its own (data under .data/) and the demo feed. Extra arguments go to
# `tickmesh dev` (e.g. --feed none, --listen 0.0.0.0:50051). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/tools.sh
ensure_redis
ensure_ssl_dev
profile="${TICKMESH_PROFILE:-dev}"
echo "==> cargo build --profile $profile --bin tickmesh" >&2
cargo build --profile "$profile" --bin tickmesh >&2
dir=debug
[ "$profile" = "dev" ] || dir="$profile"
exec "target/$dir/tickmesh" dev "$@"

#!/bin/sh
# Readiness: the node answers, and it sees the cluster healthy (every slot
# served: cluster_state:ok). Before the bootstrap Job formed the cluster no
# node is ready; the headless Service publishes their names anyway.
[ "$(redis-cli -p 6379 ping)" = PONG ] || exit 1
redis-cli -p 6379 cluster info | grep -q '^cluster_state:ok'

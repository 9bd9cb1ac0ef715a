#!/bin/sh
# Readiness: the node answers, and it sees the cluster healthy (every slot
# served: cluster_state:ok). Before the bootstrap Job formed the cluster no
# node is ready; the headless Service publishes their names anyway. A
# replica is ready only once it holds a copy (its link to its master is up,
# the first sync done), so a rollout or a drain, which waits for readiness
# (and the PDB), does not take a master down while its replica lacks a copy
# (a replica that has not synced since it started refuses to fail over).
[ "$(redis-cli -p 6379 ping)" = PONG ] || exit 1
redis-cli -p 6379 cluster info | grep -q '^cluster_state:ok' || exit 1
replication="$(redis-cli -p 6379 info replication | tr -d '\r')"
case "$replication" in
  *role:slave*) printf '%s\n' "$replication" | grep -q '^master_link_status:up' ;;
esac

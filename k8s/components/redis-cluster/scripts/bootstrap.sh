#!/bin/sh
# Forms the Redis Cluster once: waits for the six nodes to answer, and runs
# `redis-cli --cluster create --cluster-replicas 1` only if none of them is
# part of a cluster yet (each knows only itself and serves no slot). On an
# already formed cluster it changes nothing, except that a node that came
# back empty (a lost volume) joins as a replica of the master that lacks one.
# Then it waits until every node reports cluster_state:ok. Safe to re-run.
set -eu
service="${SERVICE:-redis-cluster}"
count="${NODES:-6}"
hosts=""
i=0
while [ "$i" -lt "$count" ]; do
  hosts="$hosts $service-$i.$service.$POD_NAMESPACE.svc"
  i=$((i + 1))
done

field() { # field HOST NAME: a value of CLUSTER INFO
  redis-cli -h "$1" -p 6379 cluster info | tr -d '\r' | sed -n "s/^$2://p"
}
ip_of() {
  getent hosts "$1" | awk '{ print $1; exit }'
}

for host in $hosts; do
  until [ "$(redis-cli -h "$host" -p 6379 ping 2>/dev/null)" = PONG ]; do
    echo "waiting for $host"
    sleep 2
  done
done

formed=""
fresh=""
for host in $hosts; do
  if [ "$(field "$host" cluster_known_nodes)" = 1 ] \
      && [ "$(field "$host" cluster_slots_assigned)" = 0 ]; then
    fresh="$fresh $host"
  else
    formed="$formed $host"
  fi
done

if [ -z "$formed" ]; then
  addrs=""
  for host in $hosts; do
    ip="$(ip_of "$host")"
    [ -n "$ip" ] || { echo "cannot resolve $host" >&2; exit 1; }
    addrs="$addrs $ip:6379"
  done
  echo "creating the cluster:$hosts"
  # shellcheck disable=SC2086
  redis-cli --cluster create $addrs --cluster-replicas 1 --cluster-yes
else
  seed_host="${formed# }"
  seed="$(ip_of "${seed_host%% *}")"
  echo "cluster already formed (members:$formed)"
  for host in $fresh; do
    # The identity the node had before its volume was lost (same hostname,
    # another id) will never come back: every member forgets it.
    id="$(redis-cli -h "$host" -p 6379 cluster myid | tr -d '\r')"
    for member in $formed; do
      for stale in $(redis-cli -h "$member" -p 6379 cluster nodes | tr -d '\r' \
          | awk -v h="$host" -v id="$id" '{ split($2, a, ","); if (a[2] == h && $1 != id) print $1 }'); do
        echo "$member: forgetting $stale, the lost identity of $host"
        redis-cli -h "$member" -p 6379 cluster forget "$stale"
      done
    done
    echo "adding $host as a replica"
    redis-cli --cluster add-node "$(ip_of "$host"):6379" "$seed:6379" --cluster-slave
  done
fi

tries=0
for host in $hosts; do
  until [ "$(field "$host" cluster_state)" = ok ] \
      && [ "$(field "$host" cluster_known_nodes)" = "$count" ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 90 ]; then
      echo "$host: not in a healthy cluster of $count nodes after 3 minutes" >&2
      redis-cli -h "$host" -p 6379 cluster nodes >&2 || true
      exit 1
    fi
    sleep 2
  done
done
first="${hosts# }"
redis-cli --cluster check "$(ip_of "${first%% *}"):6379" || true
echo "redis cluster ok"

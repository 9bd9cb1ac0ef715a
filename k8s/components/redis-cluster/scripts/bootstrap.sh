#!/bin/sh
# Forms the Redis Cluster once: waits for the six nodes to answer, and runs
# `redis-cli --cluster create --cluster-replicas 1` only if none of them is
# part of a cluster yet (each knows only itself and serves no slot). On an
# already formed cluster it changes nothing, except that a node that came
# back empty (a lost volume) joins as a replica of the master that lacks one,
# once a replica has taken over the slots of the identity it lost.
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
# lost_ids MEMBER HOST ID: the other ids MEMBER knows under HOST's name.
lost_ids() {
  redis-cli -h "$1" -p 6379 cluster nodes | tr -d '\r' \
    | awk -v h="$2" -v id="$3" '{ split($2, a, ","); if (a[2] == h && $1 != id) print $1 }'
}
# lost_serving MEMBER HOST ID: those of them that, as MEMBER sees it, still
# serve slots (CLUSTER NODES fields 9 and on) or are some node's master.
# A member that does not answer counts as "maybe".
lost_serving() {
  nodes="$(redis-cli -h "$1" -p 6379 cluster nodes | tr -d '\r')"
  [ -n "$nodes" ] || { echo "$1 (no answer)"; return; }
  printf '%s\n' "$nodes" | awk -v h="$2" -v id="$3" '
    { split($2, a, ","); name[$1] = a[2]; if (NF > 8) serving[$1] = 1; if ($4 != "-") serving[$4] = 1 }
    END { for (n in name) if (name[n] == h && n != id && serving[n]) print n }'
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
    # another id) will never come back: every member forgets it. Not before
    # its replica has taken its slots over, though (cluster-node-timeout,
    # then a vote): a forgotten master's slots would be left unserved, and
    # its replica (which cannot forget its own master) would stay behind.
    id="$(redis-cli -h "$host" -p 6379 cluster myid | tr -d '\r')"
    tries=0
    until [ -z "$(for member in $formed; do lost_serving "$member" "$host" "$id"; done)" ]; do
      tries=$((tries + 1))
      if [ "$tries" -gt 90 ]; then
        echo "$host: no replica took the slots of its lost identity over within 3 minutes" \
          "(was its replica lost too? then their data has no copy left): repair by hand" \
          "(redis-cli --cluster fix) and run again" >&2
        redis-cli -h "${seed_host%% *}" -p 6379 cluster nodes >&2 || true
        exit 1
      fi
      echo "$host: waiting for the replica of its lost identity to take its slots over"
      sleep 2
    done
    for member in $formed; do
      for stale in $(lost_ids "$member" "$host" "$id"); do
        echo "$member: forgetting $stale, the lost identity of $host"
        # redis-cli exits 0 on an error reply: check the reply itself.
        reply="$(redis-cli -h "$member" -p 6379 cluster forget "$stale" | tr -d '\r')"
        [ "$reply" = OK ] || { echo "$member: cluster forget $stale: $reply" >&2; exit 1; }
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

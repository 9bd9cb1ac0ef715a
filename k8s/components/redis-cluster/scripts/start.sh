#!/bin/sh
# Starts one Redis Cluster node (redis-server's arguments are passed on).
#
# The cluster bus connects to peers by the IP in nodes.conf, and a pod gets a
# new IP when it is recreated. Every node announces its stable DNS name
# (cluster-announce-hostname), which nodes.conf keeps next to the address
# (`<id> <ip>:<port>@<cport>,<hostname>[,...] <flags> ...`), so before
# starting we look each hostname up again and write its current IP. A peer
# whose name does not resolve yet keeps its old address; it refreshes ours
# when it starts and connects. Without this, a restart of every pod at once
# (a node pool upgrade) would leave a cluster whose members cannot find each
# other.
set -eu
conf="${DATA_DIR:-/data}/nodes.conf"

# Writes nodes.conf ($1) with current IPs to $2. A function, so that `set --`
# does not touch redis-server's arguments.
refresh() {
  : > "$2"
  while IFS= read -r line; do
    set -f
    # shellcheck disable=SC2086
    set -- $line
    set +f
    if [ "$#" -ge 3 ] && [ "${2#*,}" != "$2" ]; then
      addr="${2%%,*}"   # ip:port@cport
      aux="${2#*,}"     # hostname[,key=value...]
      host="${aux%%,*}"
      ip=""
      case "$3" in
        *myself*) ip="$POD_IP" ;;
        *) if [ -n "$host" ]; then ip="$(getent hosts "$host" | awk '{ print $1; exit }')"; fi ;;
      esac
      if [ -n "$ip" ]; then
        if [ "${addr%:*}" != "$ip" ]; then echo "nodes.conf: $host ${addr%:*} -> $ip" >&2; fi
        first="$1"
        new="$ip:${addr##*:},$aux"
        shift 2
        line="$first $new $*"
      fi
    fi
    printf '%s\n' "$line"
  done < "$1" > "$2"
}

if [ -s "$conf" ]; then
  # Give the peers' DNS records (published before they are ready) a moment.
  tries=0
  while [ "$tries" -lt 15 ]; do
    missing=0
    for host in $(awk '$2 ~ /,/ { split($2, a, ","); if (a[2] != "") print a[2] }' "$conf"); do
      getent hosts "$host" >/dev/null 2>&1 || missing=$((missing + 1))
    done
    [ "$missing" -eq 0 ] && break
    tries=$((tries + 1))
    sleep 2
  done
  refresh "$conf" "$conf.refresh"
  mv "$conf.refresh" "$conf"
fi
exec redis-server "$@"

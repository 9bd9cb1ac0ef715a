#!/usr/bin/env bash
# Redis CPU per event of the ranking record script, alone (no gRPC, no mesh).
#
# Starts a throwaway redis-server, fills a six-window board (all, hour, day,
# week, month, 24h) with 100,000 members through the script itself, then has
# redis-benchmark call the script with EVENTS new events per call (unique
# event ids, random members) and reports redis-server CPU time (INFO cpu) per
# event. With --without-sorted-set-writes the script's ZREM/ZADD of window
# entries are skipped (the warm-up still uses the real script), which shows
# what the sorted-set updates cost.
#
# usage: services/ranking/bench/script_cpu.sh [--without-sorted-set-writes] [EVENTS] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ablate=0
if [[ "${1:-}" == "--without-sorted-set-writes" ]]; then ablate=1; shift; fi
events=${1:-12}
calls=${2:-15000}
command -v redis-server >/dev/null || apt-get install -y redis-server >/dev/null
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
cleanup() { redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

python3 - "$work" "$ablate" <<'PY'
import re, sys
work, ablate = sys.argv[1], sys.argv[2] == "1"
lua = open("services/ranking/src/lua.rs").read()
rec = open("services/ranking/src/record.rs").read()
prelude = re.search(r'pub const PRELUDE: &str = r#"(.*?)"#;', lua, re.S).group(1)
body = re.search(r'const RECORD_LUA: &str = r#"(.*?)"#;', rec, re.S).group(1)
script = prelude + "\n" + body
open(f"{work}/record.lua", "w").write(script)
if ablate:
    lines = [
        "-- " + l if ("redis.call('ZREM', KEYS[5 + 2 * w]" in l or "redis.call('ZADD', KEYS[5 + 2 * w]" in l) else l
        for l in script.splitlines()
    ]
    assert sum(l.startswith("-- ") and "redis.call('Z" in l for l in lines) == 2, "script changed: update the ablation"
    script = "\n".join(lines)
open(f"{work}/measured.lua", "w").write(script)
PY

redis-server --port "$port" --save '' --appendonly no --daemonize yes --logfile "$work/redis.log" --dir "$work" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
warm=$(redis-cli -p "$port" script load "$(cat "$work/record.lua")")
sha=$(redis-cli -p "$port" script load "$(cat "$work/measured.lua")")

b="{b}"
keys="$b:seq $b:ev $b:idx $b:chg $b:data $b:roll"
windows="all hour:2030-01-01T10 day:2030-01-01 week:2030-W01 month:2030-01 24h"
for w in $windows; do keys="$keys $b:z:$w $b:h:$w"; done
for p in 0 1 2 3 4; do keys="$keys $b:ev:$((100 - p))"; done
nkeys=$(echo "$keys" | wc -w)
args="9999999999999 0 i h 10000 1000 6"
for w in $windows; do
  case $w in all|24h) args="$args $w 0 0" ;; *) args="$args $w 9999999999999 9999999999000" ;; esac
done

# Warm-up: every member in every window (redis-benchmark's members are
# "member:" + 12 digits).
python3 - "$warm" "$nkeys" "$keys" "$args" <<'PY' | redis-cli -p "$port" --pipe >/dev/null
import sys
sha, nkeys, keys, args = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
def resp(parts):
    out = "*%d\r\n" % len(parts)
    for p in map(str, parts):
        out += "$%d\r\n%s\r\n" % (len(p.encode()), p)
    return out
n = 0
for start in range(0, 100_000, 500):
    events = []
    for m in range(start, start + 500):
        n += 1
        events += ["warm%d" % n, "member:%012d" % m, "1", ""]
    sys.stdout.write(resp(["EVALSHA", sha, nkeys] + keys + args + events))
PY

ev=()
for _ in $(seq "$events"); do ev+=("e__rand_int__x__rand_int__" "member:__rand_int__" 1 ""); done
cpu() { redis-cli -p "$port" info cpu | awk -F: '/used_cpu_(user|sys):/ { s += $2 } END { print s }'; }
before=$(cpu)
# shellcheck disable=SC2086
redis-benchmark -p "$port" -c 20 -n "$calls" -r 100000 -q EVALSHA "$sha" "$nkeys" $keys $args "${ev[@]}" >/dev/null
after=$(cpu)
members=$(redis-cli -p "$port" zcard "$b:z:all")
recorded=$(($(redis-cli -p "$port" get "$b:seq") - 100000))
python3 -c "print('record script, %d events per call%s: %.1f us of redis-server CPU per event (%d of %d events recorded, %d members per window)' % ($events, ', without sorted-set writes' if $ablate else '', ($after - $before) * 1e6 / ($calls * $events), $recorded, $calls * $events, $members))"

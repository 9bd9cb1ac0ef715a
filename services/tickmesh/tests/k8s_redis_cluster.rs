//! The prod overlay's Redis Cluster (k8s/components/redis-cluster), run for
//! real: no Kubernetes here, but the pieces of `kubectl kustomize
//! k8s/overlays/prod` on real redis-server processes. Each of the
//! StatefulSet's six pods runs the container's command (the scripts
//! ConfigMap's start.sh) with its arguments, bootstrap.sh forms the cluster
//! with the Job's environment, the probes are the pods' ready.sh and
//! alive.sh, and the `tickmesh serve` binary runs with the marketfeed
//! Deployment's environment and the tickmesh-config ConfigMap. Then what the
//! scripts exist for: a second bootstrap changes nothing, all six pods come
//! back at once on new IPs, and a master whose machine and volume were lost
//! comes back empty and rejoins as a replica (the Job re-run right away, so
//! before the failover), while the trades acknowledged before all that are
//! still there.
//!
//! What stands in for Kubernetes, and only that:
//! - a pod's network: each pod has a loopback address of its own (127.0.1.x,
//!   another when the pod is recreated), its server binds and dials from it
//!   alone (`--bind`, `--bind-source-addr`), and one free port stands in for
//!   6379 on every node (the cluster bus on it + 10000), so the test needs
//!   neither 6379 free nor root;
//! - the headless Service's DNS: a `getent` first on the scripts' PATH reads
//!   the test's table of pod names (a name appears when its pod starts), and
//!   a `redis-cli` wrapper resolves `-h NAME` with it, sends a command
//!   without `-h` to the pod's own address (a pod's 127.0.0.1) and maps port
//!   6379 to the stand-in: the scripts run unchanged;
//! - the volume: a directory per pod (`/data` in the arguments, `DATA_DIR`
//!   for start.sh);
//! - `--protected-mode no`: the redis image's compiled-in default (Debian's
//!   redis-server defaults to yes);
//! - for the tickmesh binary, which follows the cluster's redirects by pod
//!   name, a private /etc/hosts (`unshare --mount` and a bind mount, for that
//!   process only; where unshare is not allowed the nodes are switched to IP
//!   endpoints, `cluster-preferred-endpoint-type ip`, and the test says so);
//!   it listens on free loopback ports, exports no traces (no collector)
//!   and runs no venue feeds (out of reach from a test).
//!
//! Redis here is Debian's 7.0 (the image is 7.4): no WAITAOF, so the
//! marketfeed pods acknowledge on `appendfsync always` plus `WAIT 1` (the
//! replica received the trades) rather than `WAITAOF 1 1` (the replica
//! fsynced them).

mod common;
mod manifests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Client, collect, eventually, trades};
use manifests::EnvSource;
use serde_json::Value;
use tickmesh_api::marketfeed::market_feed_service_client::MarketFeedServiceClient;
use tickmesh_api::marketfeed::{
    PublishTradesRequest, StreamTradesRequest, UpsertInstrumentRequest,
};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_tickmesh");
const ADMIN_TOKEN: &str = "k8s-test-admin-token";
const SLOTS: u32 = 16384;

/// What the prod overlay deploys for the cluster, off the rendered manifests.
struct Deployed {
    /// The scripts ConfigMap's files.
    scripts: BTreeMap<String, String>,
    /// Where the pods mount it.
    scripts_mount: String,
    statefulset: String,
    service: String,
    namespace: String,
    replicas: usize,
    command: Vec<String>,
    args: Vec<String>,
    pod_env: Vec<(String, EnvSource)>,
    readiness: Vec<String>,
    liveness: Vec<String>,
    job_command: Vec<String>,
    job_env: Vec<(String, EnvSource)>,
    marketfeed_env: Vec<(String, EnvSource)>,
    tickmesh_config: BTreeMap<String, String>,
}

impl Deployed {
    fn read(objects: &[Value]) -> Deployed {
        let sts = manifests::object(objects, "StatefulSet", "redis-cluster");
        let pod = &sts["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let scripts_volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["configMap"]["name"].is_string())
            .expect("the scripts volume");
        let scripts_mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == scripts_volume["name"])
            .expect("the scripts mount")["mountPath"]
            .as_str()
            .unwrap()
            .to_string();
        let config_map = |name: &str| -> BTreeMap<String, String> {
            manifests::of_kind(objects, "ConfigMap")
                .find(|c| c["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("no ConfigMap {name}"))["data"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        };
        let probe = |kind: &str| -> Vec<String> {
            container[kind]["exec"]["command"]
                .as_array()
                .unwrap_or_else(|| panic!("no exec {kind}"))
                .iter()
                .map(manifests::scalar_text)
                .collect()
        };
        assert_eq!(
            probe("startupProbe"),
            probe("livenessProbe"),
            "startup and liveness run the same check"
        );
        let job = manifests::object(objects, "Job", "redis-cluster-bootstrap");
        let marketfeed = manifests::object(objects, "Deployment", "marketfeed");
        let tickmesh_config = marketfeed["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|v| v["configMap"]["name"].as_str())
            .expect("the marketfeed pods' config volume");
        let text = |v: &Value| v.as_str().unwrap().to_string();
        Deployed {
            scripts: config_map(scripts_volume["configMap"]["name"].as_str().unwrap()),
            scripts_mount,
            statefulset: text(&sts["metadata"]["name"]),
            service: text(&sts["spec"]["serviceName"]),
            namespace: text(&sts["metadata"]["namespace"]),
            replicas: sts["spec"]["replicas"].as_u64().unwrap() as usize,
            command: manifests::container_list(sts, "command"),
            args: manifests::container_list(sts, "args"),
            pod_env: manifests::container_env(sts),
            readiness: probe("readinessProbe"),
            liveness: probe("livenessProbe"),
            job_command: manifests::container_list(job, "command"),
            job_env: manifests::container_env(job),
            marketfeed_env: manifests::container_env(marketfeed),
            tickmesh_config: config_map(tickmesh_config),
        }
    }
}

/// A Redis Cluster pod: its name, current address and volume.
struct Pod {
    name: String,
    addr: String,
    data: PathBuf,
    log: PathBuf,
    server: Option<Child>,
}

/// One node as `CLUSTER NODES` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    id: String,
    addr: String,
    hostname: String,
    flags: Vec<String>,
    master_id: Option<String>,
    slots: Vec<String>,
}

impl Node {
    fn master(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }

    /// Id, role, master, slots and name: what a restart must not change.
    fn identity(&self) -> (String, bool, Option<String>, Vec<String>, String) {
        (
            self.id.clone(),
            self.master(),
            self.master_id.clone(),
            self.slots.clone(),
            self.hostname.clone(),
        )
    }
}

fn parse_nodes(text: &str) -> Vec<Node> {
    let mut nodes: Vec<Node> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (addr, hostname) = f[1].split_once(',').unwrap_or((f[1], ""));
            Node {
                id: f[0].to_string(),
                addr: addr.split('@').next().unwrap().to_string(),
                hostname: hostname.split(',').next().unwrap().to_string(),
                flags: f[2]
                    .split(',')
                    .filter(|x| *x != "myself")
                    .map(String::from)
                    .collect(),
                master_id: (f[3] != "-").then(|| f[3].to_string()),
                slots: f[8..].iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
    nodes
}

fn slot_count(slots: &[String]) -> Result<u32, String> {
    slots.iter().try_fold(0, |sum, range| {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if a <= b => Ok(sum + b - a + 1),
            _ => Err(format!("slot entry {range} (a migration in progress?)")),
        }
    })
}

/// The cluster on this machine: pods, the DNS table, the shims.
struct Cluster {
    deployed: Deployed,
    dir: PathBuf,
    bin: PathBuf,
    scripts: PathBuf,
    /// The headless Service's records: `ADDRESS NAME` lines.
    dns: PathBuf,
    port: u16,
    pods: Vec<Pod>,
}

impl Cluster {
    fn new(deployed: Deployed, addrs: &[String], port: u16) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "tickmesh-k8s-redis-cluster-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let (bin, scripts) = (dir.join("bin"), dir.join("scripts"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&scripts).unwrap();
        for (file, text) in &deployed.scripts {
            std::fs::write(scripts.join(file), text).unwrap();
        }
        let dns = dir.join("dns");
        std::fs::write(&dns, "").unwrap();
        let real_cli = which("redis-cli").expect("redis-cli (apt-get install -y redis-server)");
        shim(
            &bin.join("getent"),
            &format!(
                "#!/bin/sh\n\
                 # getent hosts NAME from the test's table of the headless Service's records.\n\
                 [ \"$1\" = hosts ] && [ $# -eq 2 ] || exec /usr/bin/getent \"$@\"\n\
                 awk -v n=\"$2\" '$2 == n {{ print $1 \"  \" $2; found = 1; exit }} END {{ exit found ? 0 : 2 }}' '{}'\n",
                dns.display()
            ),
        );
        shim(
            &bin.join("redis-cli"),
            &format!(
                "#!/bin/sh\n\
                 # redis-cli as in a pod: -h NAME resolved by getent, no -h: this pod's\n\
                 # own server ($POD_IP), port 6379: the test's stand-in port.\n\
                 n=$#; next=''; host=''\n\
                 for arg in \"$@\"; do\n\
                 \x20 case \"$next\" in\n\
                 \x20   host) ip=\"$(getent hosts \"$arg\" | awk '{{ print $1; exit }}')\"; arg=\"${{ip:-$arg}}\"; next='' ;;\n\
                 \x20   port) if [ \"$arg\" = 6379 ]; then arg={port}; fi; next='' ;;\n\
                 \x20   *) case \"$arg\" in\n\
                 \x20        -h) next=host; host=1 ;;\n\
                 \x20        -p) next=port ;;\n\
                 \x20        *:6379) arg=\"${{arg%:6379}}:{port}\" ;;\n\
                 \x20      esac ;;\n\
                 \x20 esac\n\
                 \x20 set -- \"$@\" \"$arg\"\n\
                 done\n\
                 shift \"$n\"\n\
                 if [ -z \"$host\" ] && [ -n \"${{POD_IP:-}}\" ]; then set -- -h \"$POD_IP\" \"$@\"; fi\n\
                 exec '{}' \"$@\"\n",
                real_cli.display()
            ),
        );
        let pods = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let name = format!("{}-{i}", deployed.statefulset);
                Pod {
                    data: dir.join(&name).join("data"),
                    log: dir.join(&name).join("log"),
                    name,
                    addr: addr.clone(),
                    server: None,
                }
            })
            .collect();
        Cluster {
            deployed,
            dir,
            bin,
            scripts,
            dns,
            port,
            pods,
        }
    }

    /// A pod's DNS name in the headless Service.
    fn hostname(&self, pod: usize) -> String {
        self.hostname_of(&self.pods[pod])
    }

    fn hostname_of(&self, pod: &Pod) -> String {
        format!(
            "{}.{}.{}.svc",
            pod.name, self.deployed.service, self.deployed.namespace
        )
    }

    /// Publishes (or, with `None`, removes) a pod's DNS record.
    fn set_record(&self, pod: usize, addr: Option<&str>) {
        let name = self.hostname(pod);
        let mut table: Vec<String> = std::fs::read_to_string(&self.dns)
            .unwrap()
            .lines()
            .filter(|l| l.split_whitespace().nth(1) != Some(name.as_str()))
            .map(String::from)
            .collect();
        if let Some(addr) = addr {
            table.push(format!("{addr} {name}"));
        }
        let tmp = self.dns.with_extension("tmp");
        std::fs::write(&tmp, table.join("\n") + "\n").unwrap();
        std::fs::rename(tmp, &self.dns).unwrap();
    }

    /// PATH with the shims first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// A command of the manifests, with the scripts mount mapped here.
    fn command(&self, argv: &[String]) -> Command {
        let argv: Vec<String> = argv
            .iter()
            .map(
                |a| match a.strip_prefix(&format!("{}/", self.deployed.scripts_mount)) {
                    Some(file) => self.scripts.join(file).display().to_string(),
                    None => a.clone(),
                },
            )
            .collect();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", self.path())
            .kill_on_drop(true);
        cmd
    }

    /// The pod's environment as the kubelet sets it (the downward API).
    fn pod_env(&self, pod: usize) -> Vec<(String, String)> {
        let p = &self.pods[pod];
        self.deployed
            .pod_env
            .iter()
            .map(|(name, source)| {
                let value = match source {
                    EnvSource::Value(v) => v.clone(),
                    EnvSource::Field(f) if f == "metadata.name" => p.name.clone(),
                    EnvSource::Field(f) if f == "metadata.namespace" => {
                        self.deployed.namespace.clone()
                    }
                    EnvSource::Field(f) if f == "status.podIP" => p.addr.clone(),
                    other => panic!("{name}: {other:?} is not set here"),
                };
                (name.clone(), value)
            })
            .collect()
    }

    /// Starts a pod's container: the StatefulSet's command and arguments
    /// (`$(VAR)` expanded as the kubelet does), on this machine's stand-ins.
    fn start(&mut self, pod: usize) {
        let env = self.pod_env(pod);
        let p = &self.pods[pod];
        std::fs::create_dir_all(&p.data).unwrap();
        let mut args: Vec<String> = self
            .deployed
            .args
            .iter()
            .map(|a| {
                let mut a = a.clone();
                for (k, v) in &env {
                    a = a.replace(&format!("$({k})"), v);
                }
                match a.strip_prefix("/data") {
                    Some(rest) => format!("{}{rest}", p.data.display()),
                    None => a,
                }
            })
            .collect();
        let port = args
            .iter()
            .position(|a| a == "--port")
            .expect("--port in the StatefulSet's arguments");
        assert_eq!(args[port + 1], "6379");
        args[port + 1] = self.port.to_string();
        args.extend(
            [
                "--bind",
                &p.addr,
                "--bind-source-addr",
                &p.addr,
                "--protected-mode",
                "no",
            ]
            .map(String::from),
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .unwrap();
        let child = self
            .command(&self.deployed.command)
            .args(&args)
            .envs(env)
            .env("DATA_DIR", &p.data)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start.sh");
        self.pods[pod].server = Some(child);
    }

    /// Runs pod `pod` at `addr`: its DNS record, then its container.
    fn run_at(&mut self, pod: usize, addr: &str) {
        self.pods[pod].addr = addr.to_string();
        self.set_record(pod, Some(addr));
        self.start(pod);
    }

    /// Deletes every pod at once: SIGTERM to all, then waits for each to
    /// exit; their DNS records go away.
    async fn stop_all(&mut self) {
        let mut children = Vec::new();
        for pod in 0..self.pods.len() {
            let child = self.pods[pod].server.take().expect("a running pod");
            let pid = child.id().expect("running").to_string();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap();
            assert!(status.success());
            self.set_record(pod, None);
            children.push(child);
        }
        for mut child in children {
            tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .expect("redis-server exits within the grace period")
                .unwrap();
        }
    }

    /// SIGKILL: the machine under the pod died.
    async fn kill(&mut self, pod: usize) {
        let mut child = self.pods[pod].server.take().expect("a running pod");
        child.kill().await.unwrap();
    }

    /// Runs a probe's command in a pod; true when it passes.
    async fn probe(&self, pod: usize, argv: &[String]) -> bool {
        let run = self.command(argv).envs(self.pod_env(pod)).output();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), run).await,
            Ok(Ok(out)) if out.status.success()
        )
    }

    async fn ready(&self, pod: usize) -> bool {
        self.probe(pod, &self.deployed.readiness).await
    }

    async fn alive(&self, pod: usize) -> bool {
        self.probe(pod, &self.deployed.liveness).await
    }

    /// Runs the bootstrap Job's container to completion; its output.
    async fn bootstrap(&self) -> String {
        let env: Vec<(String, String)> = self
            .deployed
            .job_env
            .iter()
            .map(|(name, source)| match source {
                EnvSource::Value(v) => (name.clone(), v.clone()),
                EnvSource::Field(f) if f == "metadata.namespace" => {
                    (name.clone(), self.deployed.namespace.clone())
                }
                other => panic!("{name}: {other:?} is not set here"),
            })
            .collect();
        let run = self
            .command(&self.deployed.job_command)
            .envs(env)
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(240), run)
            .await
            .expect("bootstrap.sh gave up within its own 3 minutes")
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "bootstrap.sh failed:\n{text}\n{}",
            self.logs()
        );
        text
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        pod: usize,
        args: &[&str],
    ) -> Result<T, String> {
        let client = redis::Client::open(format!("redis://{}:{}", self.pods[pod].addr, self.port))
            .map_err(|e| e.to_string())?;
        let ask = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query_async::<T>(&mut conn).await
        };
        match tokio::time::timeout(Duration::from_secs(2), ask).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(format!("{}: {e}", self.pods[pod].name)),
            Err(_) => Err(format!("{}: no answer", self.pods[pod].name)),
        }
    }

    async fn nodes(&self, pod: usize) -> Result<Vec<Node>, String> {
        Ok(parse_nodes(
            &self.query::<String>(pod, &["CLUSTER", "NODES"]).await?,
        ))
    }

    /// Healthy as the Job and the probes mean it, and as it should be: every
    /// pod ready and alive, sees cluster_state:ok and the same six nodes at
    /// their pods' current addresses under their DNS names, three masters
    /// serving all slots with one replica each. Returns that topology.
    async fn healthy(&self) -> Result<Vec<Node>, String> {
        let mut agreed: Option<Vec<Node>> = None;
        for pod in 0..self.pods.len() {
            let name = &self.pods[pod].name;
            let info: String = self.query(pod, &["CLUSTER", "INFO"]).await?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("{name}: not cluster_state:ok"));
            }
            let nodes = self.nodes(pod).await?;
            if nodes.len() != self.pods.len() {
                return Err(format!("{name} knows {} nodes", nodes.len()));
            }
            for (i, node) in nodes.iter().enumerate() {
                let want = (
                    format!("{}:{}", self.pods[i].addr, self.port),
                    self.hostname(i),
                );
                if (node.addr.clone(), node.hostname.clone()) != want {
                    return Err(format!("{name} sees {node:?}, not at {want:?}"));
                }
                if let Some(flag) = node.flags.iter().find(|f| {
                    ["fail", "fail?", "handshake", "noaddr", "nofailover"].contains(&f.as_str())
                }) {
                    return Err(format!("{name} sees {} {flag}", node.hostname));
                }
            }
            let masters: Vec<&Node> = nodes.iter().filter(|n| n.master()).collect();
            let mut served = 0;
            for m in &masters {
                served += slot_count(&m.slots)?;
            }
            let mut replicated: Vec<&str> = nodes
                .iter()
                .filter(|n| !n.master())
                .map(|n| n.master_id.as_deref().unwrap_or("-"))
                .collect();
            replicated.sort();
            let mut master_ids: Vec<&str> = masters.iter().map(|m| m.id.as_str()).collect();
            master_ids.sort();
            if masters.len() != 3 || served != SLOTS || replicated != master_ids {
                return Err(format!(
                    "{name}: {} masters serving {served} slots, replicas of {replicated:?}",
                    masters.len()
                ));
            }
            let view: Vec<Node> = nodes;
            match &agreed {
                None => agreed = Some(view),
                Some(first) => {
                    let ids = |v: &[Node]| v.iter().map(Node::identity).collect::<Vec<_>>();
                    if ids(first) != ids(&view) {
                        return Err(format!("{name} disagrees: {view:?} vs {first:?}"));
                    }
                }
            }
        }
        for pod in 0..self.pods.len() {
            let replication: String = self.query(pod, &["INFO", "replication"]).await?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Err(format!(
                    "{}: not synced with its master",
                    self.pods[pod].name
                ));
            }
            if !self.ready(pod).await {
                return Err(format!("{}: ready.sh fails", self.pods[pod].name));
            }
            if !self.alive(pod).await {
                return Err(format!("{}: alive.sh fails", self.pods[pod].name));
            }
        }
        Ok(agreed.unwrap())
    }

    async fn wait_healthy(&self, within: Duration, what: &str) -> Vec<Node> {
        let deadline = Instant::now() + within;
        loop {
            match self.healthy().await {
                Ok(nodes) => return nodes,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "{what}: not healthy within {within:?}: {e}\n{}",
                        self.logs()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The end of every pod's log, for a failure's message.
    fn logs(&self) -> String {
        let mut out = format!("(files kept in {})\n", self.dir.display());
        for p in &self.pods {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {} ({})\n", p.name, p.addr);
            for l in &lines[lines.len().saturating_sub(15)..] {
                out += &format!("{l}\n");
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.pods {
            if let Some(mut child) = p.server.take() {
                let _ = child.start_kill();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn shim(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A port free on every address for the nodes and their cluster bus.
fn free_port(addrs: &[String]) -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    for i in 0..200u64 {
        let port = 15000 + ((seed.wrapping_mul(6364136223846793005) >> 33) + i * 7919) % 10000;
        let port = port as u16;
        let free = addrs.iter().all(|a| {
            [port, port + 10000]
                .iter()
                .all(|p| std::net::TcpListener::bind((a.as_str(), *p)).is_ok())
        });
        if free {
            return port;
        }
    }
    panic!("no port free on {addrs:?}");
}

/// A loopback address per pod: generation `g` of pod `i`.
fn addrs(generation: u8, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("127.0.{generation}.{}", 11 + i))
        .collect()
}

/// How the tickmesh binary reaches the pods by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Names {
    /// `unshare` with these flags gives it a private /etc/hosts.
    Unshare(&'static [&'static str]),
    /// No unshare here: the nodes are switched to IP endpoints.
    IpEndpoints,
}

async fn name_resolution(cluster: &Cluster) -> Names {
    let hosts = cluster.dir.join("probe-hosts");
    std::fs::write(&hosts, "127.0.0.99 tickmesh-unshare-probe.invalid\n").unwrap();
    for flags in [
        &["--mount"][..],
        &["--user", "--map-root-user", "--mount"][..],
    ] {
        let ok = Command::new("unshare")
            .args(flags)
            .args([
                "sh",
                "-c",
                "mount --bind \"$0\" /etc/hosts && getent hosts tickmesh-unshare-probe.invalid",
            ])
            .arg(&hosts)
            .output()
            .await
            .is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("127.0.0.99")
            });
        if ok {
            return Names::Unshare(flags);
        }
    }
    eprintln!(
        "NOTE: unshare cannot give the tickmesh process a private /etc/hosts here, so the nodes are \
         switched to cluster-preferred-endpoint-type ip: redirects by pod name are not exercised"
    );
    Names::IpEndpoints
}

fn free_loopback_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A pod has its ports to itself; here every `"0.0.0.0:PORT"` a config file
/// listens on (the gRPC server, the metrics endpoint, …) becomes a free
/// loopback port.
fn own_ports(config: &str) -> String {
    let mut out = String::new();
    let mut rest = config;
    while let Some(at) = rest.find("\"0.0.0.0:") {
        let end = rest[at + 1..].find('"').expect("a closing quote") + at + 1;
        out += &rest[..at];
        out += &format!("\"{}\"", free_loopback_addr());
        rest = &rest[end + 1..];
    }
    out + rest
}

/// `tickmesh serve` as the marketfeed Deployment runs it.
struct Marketfeed {
    child: Child,
    endpoint: String,
    log: PathBuf,
}

impl Marketfeed {
    async fn start(cluster: &Cluster, names: Names, run: &str) -> Marketfeed {
        let dir = cluster.dir.join(run);
        let config_dir = dir.join("etc-tickmesh");
        std::fs::create_dir_all(&config_dir).unwrap();
        for (file, text) in &cluster.deployed.tickmesh_config {
            std::fs::write(config_dir.join(file), own_ports(text)).unwrap();
        }
        let listen = free_loopback_addr();
        let mut env = Vec::new();
        for (name, source) in &cluster.deployed.marketfeed_env {
            let value = match (name.as_str(), source) {
                ("TICKMESH_CONFIG", EnvSource::Value(v)) => {
                    v.replace("/etc/tickmesh/", &format!("{}/", config_dir.display()))
                }
                ("TICKMESH_REDIS_CLUSTER_NODES", EnvSource::Value(v)) => {
                    let mut seeds = v.replace(":6379", &format!(":{}", cluster.port));
                    if names == Names::IpEndpoints {
                        for i in 0..cluster.pods.len() {
                            seeds = seeds.replace(&cluster.hostname(i), &cluster.pods[i].addr);
                        }
                    }
                    seeds
                }
                // The venues are out of reach from a test.
                ("TICKMESH_FEEDS", EnvSource::ConfigMap { .. }) => String::new(),
                (_, EnvSource::Value(v)) => v.clone(),
                (_, EnvSource::Secret { key, .. }) if key == "admin-token" => {
                    ADMIN_TOKEN.to_string()
                }
                (name, other) => panic!("{name}: {other:?} is not set here"),
            };
            env.push((name.to_string(), value));
        }
        // This machine's stand-ins: a known address, no collector.
        env.push(("TICKMESH_SERVER_LISTEN".into(), listen.to_string()));
        env.push(("TICKMESH_TELEMETRY_OTLP_ENDPOINT".into(), String::new()));
        let mut cmd = match names {
            Names::Unshare(flags) => {
                let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
                for i in 0..cluster.pods.len() {
                    hosts += &format!("{} {}\n", cluster.pods[i].addr, cluster.hostname(i));
                }
                let file = dir.join("hosts");
                std::fs::write(&file, hosts).unwrap();
                let mut cmd = Command::new("unshare");
                cmd.args(flags)
                    .args(["sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\""])
                    .arg(file)
                    .arg(BIN);
                cmd
            }
            Names::IpEndpoints => {
                for pod in 0..cluster.pods.len() {
                    let set = ["CONFIG", "SET", "cluster-preferred-endpoint-type", "ip"];
                    cluster.query::<()>(pod, &set).await.unwrap();
                }
                Command::new(BIN)
            }
        };
        let log = dir.join("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = cmd
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .expect("tickmesh serve");
        let mut feed = Marketfeed {
            child,
            endpoint: format!("http://{listen}"),
            log,
        };
        feed.wait_ready().await;
        feed
    }

    /// The Deployment's readiness probe: gRPC health of MarketFeedService.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tickmesh serve exited ({status}):\n{}", self.log());
            }
            if let Ok(channel) = tonic::transport::Endpoint::from_shared(self.endpoint.clone())
                .unwrap()
                .connect()
                .await
            {
                let mut health = HealthClient::new(channel);
                let check = health.check(HealthCheckRequest {
                    service: "tickmesh.marketfeed.v1.MarketFeedService".into(),
                });
                if let Ok(r) = check.await
                    && r.into_inner().status() == ServingStatus::Serving
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "tickmesh serve not ready within 45 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn client(&self) -> Client {
        MarketFeedServiceClient::connect(self.endpoint.clone())
            .await
            .expect("connect")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

async fn read_all(client: &mut Client, n: usize) -> Vec<(u64, String)> {
    let mut stream = client
        .stream_trades(StreamTradesRequest {
            symbols: vec!["BTCUSDT".into()],
            from_sequence: Some(1),
            cursors: vec![],
        })
        .await
        .expect("stream trades")
        .into_inner();
    let (got, gaps) = collect(&mut stream, n, Duration::from_secs(10)).await;
    assert!(gaps.is_empty(), "{gaps:?}");
    got.into_iter().map(|t| (t.sequence, t.trade_id)).collect()
}

async fn publish(client: &mut Client, prefix: &str, n: usize) {
    let r = client
        .publish_trades(PublishTradesRequest {
            trades: trades("BTCUSDT", prefix, n),
            all_or_nothing: false,
        })
        .await
        .expect("publish (acknowledged on the master and its replica)")
        .into_inner();
    assert_eq!((r.accepted, r.duplicate), (n as u32, 0), "{r:?}");
}

#[tokio::test]
async fn the_prod_redis_cluster_forms_restarts_and_rebuilds_a_lost_node() {
    let test = "the_prod_redis_cluster_forms_restarts_and_rebuilds_a_lost_node";
    let Some(objects) = manifests::render("overlays/prod", test) else {
        return;
    };
    let deployed = Deployed::read(&objects);
    let n = deployed.replicas;
    assert_eq!(n, 6);
    let (first, moved, rebuilt) = (addrs(1, n), addrs(2, n), addrs(3, 1));
    let all: Vec<String> = [&first[..], &moved[..], &rebuilt[..]].concat();
    let mut cluster = Cluster::new(deployed, &first, free_port(&all));
    let started = Instant::now();

    // The six pods start together (podManagementPolicy: Parallel); each
    // name resolves once its pod has an address. Alive, not ready: there is
    // no cluster yet.
    for (pod, addr) in first.iter().enumerate() {
        cluster.run_at(pod, addr);
    }
    for pod in 0..n {
        assert!(
            eventually(Duration::from_secs(20), || cluster.alive(pod)).await,
            "{}: alive.sh\n{}",
            cluster.pods[pod].name,
            cluster.logs()
        );
        assert!(!cluster.ready(pod).await, "ready before the cluster formed");
    }

    // The Job forms it.
    let out = cluster.bootstrap().await;
    assert!(out.contains("creating the cluster"), "{out}");
    let formed = cluster
        .wait_healthy(Duration::from_secs(30), "formed by bootstrap.sh")
        .await;

    // Running the Job again changes nothing.
    let out = cluster.bootstrap().await;
    assert!(out.contains("cluster already formed"), "{out}");
    assert!(
        !out.contains("forgetting") && !out.contains("adding"),
        "{out}"
    );
    let again = cluster
        .wait_healthy(Duration::from_secs(10), "re-run")
        .await;
    assert_eq!(again, formed, "a second bootstrap changed the cluster");
    eprintln!("formed and re-run in {:?}", started.elapsed());

    // Trades acknowledged by a marketfeed pod with the prod environment:
    // durable acks waiting for one replica.
    let names = name_resolution(&cluster).await;
    let feed = Marketfeed::start(&cluster, names, "marketfeed-1").await;
    let mut client = feed.client().await;
    let mut register = tonic::Request::new(UpsertInstrumentRequest {
        instrument: Some(common::instrument("BTCUSDT", 2, 5)),
    });
    register.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    client
        .upsert_instrument(register)
        .await
        .expect("admin token");
    publish(&mut client, "before-", 50).await;
    let read = read_all(&mut client, 50).await;
    assert_eq!(read.len(), 50);
    let log = feed.log();
    assert!(
        log.contains("durable acks: mode detected") && log.contains("1 replica(s)"),
        "the marketfeed pod waits for one replica:\n{log}"
    );
    feed.stop().await;

    // Every pod at once (a node pool upgrade): deleted, then recreated with
    // new IPs; a pod's name resolves again only once it runs, so start.sh
    // of the first ones waits for the others' records.
    cluster.stop_all().await;
    for (pod, addr) in moved.iter().enumerate() {
        cluster.run_at(pod, addr);
    }
    let restarted = cluster
        .wait_healthy(Duration::from_secs(60), "all six restarted with new IPs")
        .await;
    let identities = |v: &[Node]| v.iter().map(Node::identity).collect::<Vec<_>>();
    assert_eq!(
        identities(&restarted),
        identities(&formed),
        "the same nodes, roles and slots"
    );
    for (pod, (old, new)) in cluster.pods.iter().zip(first.iter().zip(&moved)) {
        let log = std::fs::read_to_string(&pod.log).unwrap();
        assert!(
            log.contains(&format!(
                "nodes.conf: {} {old} -> {new}",
                cluster.hostname_of(pod)
            )),
            "{}: start.sh did not rewrite its own address in nodes.conf",
            pod.name
        );
    }
    eprintln!("restarted with new IPs after {:?}", started.elapsed());

    // The master holding the trades loses its machine and its volume; the
    // pod is recreated empty on another address, and the Job, re-run right
    // away, waits for the failover, forgets the lost identity and adds the
    // new one as a replica.
    let mut lost = None;
    let mut most = 0;
    for (pod, node) in restarted.iter().enumerate() {
        let keys: u64 = cluster.query(pod, &["DBSIZE"]).await.unwrap();
        if node.master() && keys >= most {
            (lost, most) = (Some((pod, node.id.clone())), keys);
        }
    }
    assert!(most > 0, "no master holds the trades");
    let (lost, lost_id) = lost.unwrap();
    cluster.kill(lost).await;
    std::fs::remove_dir_all(&cluster.pods[lost].data).unwrap();
    cluster.run_at(lost, &rebuilt[0]);
    assert!(eventually(Duration::from_secs(20), || cluster.alive(lost)).await);
    assert!(!cluster.ready(lost).await, "an empty node is not ready");
    let out = cluster.bootstrap().await;
    assert!(
        out.contains(&format!("forgetting {lost_id}")) && out.contains("as a replica"),
        "{out}"
    );
    let rebuilt_topology = cluster
        .wait_healthy(Duration::from_secs(60), "the lost node rebuilt")
        .await;
    let node = &rebuilt_topology[lost];
    assert!(node.id != lost_id && !node.master(), "{node:?}");
    assert!(rebuilt_topology.iter().all(|n| n.id != lost_id));
    eprintln!("rebuilt the lost node after {:?}", started.elapsed());

    // The trades acknowledged before are all there; publishing goes on.
    let feed = Marketfeed::start(&cluster, names, "marketfeed-2").await;
    let mut client = feed.client().await;
    assert_eq!(read_all(&mut client, 50).await, read);
    publish(&mut client, "after-", 10).await;
    let all = read_all(&mut client, 60).await;
    assert_eq!(
        all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<u64>>()
    );
    feed.stop().await;
    eprintln!("done in {:?}", started.elapsed());
}

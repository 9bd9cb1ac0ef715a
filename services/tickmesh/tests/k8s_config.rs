//! The cluster's config (k8s/base/tickmesh.toml) and each workload's
//! TICKMESH_* variables load with the real config loader: a renamed key or an
//! unknown service in the manifests fails here, not in a crash-looping pod.
//! The prod overlays are loaded as `kubectl kustomize` renders them.

mod manifests;

use std::path::{Path, PathBuf};

use manifests::{EnvSource, k8s};
use serde_json::Value;
use tickmesh_runtime::config::{Config, StoreBackend};
use tickmesh_runtime::redis_conn::Topology;

/// The dev overlay's generated Secret: `key=value` literals.
fn dev_secret() -> Vec<(String, String)> {
    std::fs::read_to_string(k8s("overlays/dev/kustomization.yaml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ")?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The `- name: TICKMESH_… / value: …` pairs of a manifest; variables taken
/// from the Secret get the dev overlay's value for their key.
fn tickmesh_env(manifest: &str) -> Vec<(String, String)> {
    let secret = dev_secret();
    let lines: Vec<&str> = manifest.lines().map(str::trim).collect();
    let mut env = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("- name: ") else {
            continue;
        };
        if !name.starts_with("TICKMESH_") {
            continue;
        }
        let value = match lines.get(i + 1).and_then(|l| l.strip_prefix("value: ")) {
            Some(v) => v.trim_matches('"').to_string(),
            None => {
                let key = lines[i + 1..]
                    .iter()
                    .take(5)
                    .find_map(|l| l.strip_prefix("key: "))
                    .unwrap_or_else(|| panic!("{name}: neither a value nor a secret key"));
                secret
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{name}: the dev Secret has no key {key}"))
            }
        };
        env.push((name.to_string(), value));
    }
    env
}

#[test]
fn every_workload_starts_with_the_cluster_config() {
    let mut workloads = 0;
    for entry in std::fs::read_dir(k8s("base")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if path.extension().is_none_or(|e| e != "yaml") || !text.contains("image: tickmesh") {
            continue;
        }
        workloads += 1;
        let env = tickmesh_env(&text);
        let file = env
            .iter()
            .find(|(k, _)| k == "TICKMESH_CONFIG")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{}: no TICKMESH_CONFIG", path.display()));
        assert_eq!(file, "/etc/tickmesh/tickmesh.toml", "{}", path.display());
        let config = Config::load(Some(&k8s("base/tickmesh.toml")), env.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Some((_, service)) = env.iter().find(|(k, _)| k == "TICKMESH_SERVICES_ENABLED") {
            assert_eq!(
                config.services.resolved(),
                vec![service.as_str()],
                "{}: one known service per Deployment",
                path.display()
            );
            assert_eq!(config.telemetry.service_name, format!("tickmesh-{service}"));
        }
        assert_eq!(config.history.backend, "scylla");
        // Each pod serves one service: calls to another service must go to
        // that service's Service, not to this process (the default).
        for (key, endpoint, target) in [
            (
                "candles.marketfeed_endpoint",
                &config.candles.marketfeed_endpoint,
                "marketfeed",
            ),
            (
                "coupon.ranking_endpoint",
                &config.coupon.ranking_endpoint,
                "ranking",
            ),
            (
                "queue.coupon_endpoint",
                &config.queue.coupon_endpoint,
                "coupon",
            ),
        ] {
            assert_eq!(
                *endpoint,
                format!("http://{target}:50051"),
                "{}: {key}",
                path.display()
            );
            assert!(
                std::fs::read_to_string(k8s(&format!("base/{target}.yaml")))
                    .unwrap()
                    .contains(&format!("kind: Service\nmetadata:\n  name: {target}\n")),
                "{key}: no Service {target}"
            );
        }
        // The root filesystem is read-only: every file a workload writes
        // must be on its mounted volume.
        for (key, value) in env.iter().filter(|(k, _)| k.ends_with("_PATH")) {
            assert!(
                value.starts_with("/var/lib/tickmesh/")
                    && text.contains("mountPath: /var/lib/tickmesh"),
                "{}: {key}={value} is not on a mounted volume",
                path.display()
            );
        }
        // Every durable store is in ScyllaDB, so no service needs a volume
        // and each runs as a scalable Deployment (the schema Job aside).
        assert_eq!(
            config.ranking.snapshot_backend(&config.history),
            StoreBackend::Scylla
        );
        assert_eq!(
            config.coupon.store_backend(&config.history),
            StoreBackend::Scylla
        );
        assert!(
            text.contains("\nkind: Deployment\n") || text.contains("\nkind: Job\n"),
            "{}: a Deployment (or the schema Job)",
            path.display()
        );
        assert!(
            !text.contains("volumeClaimTemplates") && !text.contains("persistentVolumeClaim"),
            "{}: no volume",
            path.display()
        );
        if text.contains("\nkind: Deployment\n") {
            for kind in ["PodDisruptionBudget", "HorizontalPodAutoscaler"] {
                assert!(
                    text.contains(&format!("\nkind: {kind}\n")),
                    "{}: {kind}",
                    path.display()
                );
            }
        }
    }
    assert_eq!(workloads, 6, "five services and the schema Job");
}

/// Each overlay's venue feeds (the `tickmesh-feeds` ConfigMap, read by the
/// marketfeed pods as TICKMESH_FEEDS) load with the real config loader; the
/// base runs none.
#[test]
fn every_overlays_feeds_load() {
    let literal = |path: &str| {
        std::fs::read_to_string(k8s(path))
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("- TICKMESH_FEEDS=").map(String::from))
            .unwrap_or_else(|| panic!("{path}: no TICKMESH_FEEDS literal"))
    };
    let load = |feeds: String| {
        Config::load(
            Some(&k8s("base/tickmesh.toml")),
            vec![
                (
                    "TICKMESH_SERVICES_ENABLED".to_string(),
                    "marketfeed".to_string(),
                ),
                ("TICKMESH_FEEDS".to_string(), feeds),
            ],
        )
    };
    assert!(
        load(literal("base/kustomization.yaml"))
            .unwrap()
            .feeds
            .is_empty()
    );
    for overlay in ["dev", "prod"] {
        let path = format!("overlays/{overlay}/kustomization.yaml");
        let config = load(literal(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!config.feeds.is_empty(), "{path}: no feeds");
    }
    let marketfeed = std::fs::read_to_string(k8s("base/marketfeed.yaml")).unwrap();
    assert!(marketfeed.contains("name: tickmesh-feeds\n                  key: TICKMESH_FEEDS"));
}

/// The optional KIS poller component: its pollers.toml loads after the
/// cluster's tickmesh.toml (the files its patch lists in TICKMESH_CONFIG),
/// and the marketfeed pods get the app key from the Secret it names.
#[test]
fn the_kis_poller_component_loads_over_the_cluster_config() {
    let patch =
        std::fs::read_to_string(k8s("components/kis-poller/marketfeed-pollers.yaml")).unwrap();
    let files = patch
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("value: /etc/tickmesh/")
                .map(|v| format!("/etc/tickmesh/{v}"))
        })
        .expect("TICKMESH_CONFIG in the patch");
    let local: Vec<String> = files
        .split(',')
        .map(|f| {
            let name = f.trim_start_matches("/etc/tickmesh/");
            let dir = if name == "tickmesh.toml" {
                "base"
            } else {
                "components/kis-poller"
            };
            k8s(&format!("{dir}/{name}")).display().to_string()
        })
        .collect();
    assert_eq!(local.len(), 2, "{files}");
    let config = Config::load(
        Some(Path::new(&local.join(","))),
        vec![(
            "TICKMESH_SERVICES_ENABLED".to_string(),
            "marketfeed".to_string(),
        )],
    )
    .unwrap_or_else(|e| panic!("{files}: {e}"));
    assert_eq!(config.pollers.len(), 1);
    let kis = &config.pollers[0];
    assert_eq!(kis.app_key, "env:KIS_APP_KEY");
    assert!(kis.requests_per_second <= 20, "KIS allows 20/s per app key");
    assert_eq!(
        config.redis.url, "redis://redis:6379",
        "the cluster config is still read"
    );
    for var in ["KIS_APP_KEY", "KIS_APP_SECRET"] {
        assert!(patch.contains(&format!("- name: {var}")), "{var}");
    }
    assert!(patch.contains("name: tickmesh-broker"));
    let overlay = std::fs::read_to_string(k8s("overlays/prod-kis/kustomization.yaml")).unwrap();
    assert!(overlay.contains("../../components/kis-poller"));
}

/// The prod overlays as `kubectl kustomize` renders them: every tickmesh
/// Deployment's environment (the Redis Cluster seeds and durable replicas
/// the redis-cluster component adds, the feeds ConfigMap, the Secrets' keys
/// with stand-in values) loads over the ConfigMap files it mounts with the
/// real config loader, into a Redis Cluster of every pod of the
/// StatefulSet, with acknowledged trades and coupons waiting for a replica.
#[test]
fn the_prod_overlays_load_with_the_redis_cluster() {
    for overlay in ["overlays/prod", "overlays/prod-kis"] {
        let test = "the_prod_overlays_load_with_the_redis_cluster";
        let Some(objects) = manifests::render(overlay, test) else {
            return;
        };
        let sts = manifests::object(&objects, "StatefulSet", "redis-cluster");
        let replicas = sts["spec"]["replicas"].as_u64().unwrap();
        assert_eq!(replicas, 6, "{overlay}: 3 masters x 1 replica");
        let seeds: Vec<String> = (0..replicas)
            .map(|i| {
                format!(
                    "redis://redis-cluster-{i}.{}.{}.svc:6379",
                    sts["spec"]["serviceName"].as_str().unwrap(),
                    sts["metadata"]["namespace"].as_str().unwrap()
                )
            })
            .collect();
        assert!(
            manifests::of_kind(&objects, "Service").all(|s| s["metadata"]["name"] != "redis"),
            "{overlay}: the single Redis is gone"
        );
        // WAITAOF (what the marketfeed pods wait on for durable_replicas = 1
        // to mean "fsynced on the replica too") needs Redis 7.2; the
        // cluster's announced hostnames need 7.0.
        for workload in [
            sts,
            manifests::object(&objects, "Job", "redis-cluster-bootstrap"),
        ] {
            let image = workload["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap();
            let version: Vec<u32> = image
                .strip_prefix("redis:")
                .unwrap_or_else(|| panic!("{overlay}: {image} is not the redis image"))
                .split('.')
                .map(|n| n.parse().unwrap())
                .collect();
            assert!(
                version >= vec![7, 2],
                "{overlay}: {image}: WAITAOF needs 7.2"
            );
        }

        let dir = PathBuf::from(temp_dir(&format!("k8s-{}", overlay.replace('/', "-"))));
        let mut services = Vec::new();
        for dep in manifests::of_kind(&objects, "Deployment")
            .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/name"] == "tickmesh")
        {
            let name = dep["metadata"]["name"].as_str().unwrap();
            let mounts = mount_config_maps(&objects, dep, &dir.join(name));
            let mut file = None;
            let mut env = Vec::new();
            for (var, source) in manifests::container_env(dep) {
                let value = match source {
                    EnvSource::Value(v) => v,
                    EnvSource::ConfigMap { name, key } => {
                        manifests::scalar_text(&exact(&objects, "ConfigMap", &name)["data"][&key])
                    }
                    EnvSource::Secret { name, key } => stand_in_secret(&name, &key),
                    EnvSource::Field(path) => panic!("{overlay}: {name}: {var} from {path}"),
                };
                if var == "TICKMESH_CONFIG" {
                    file = Some(on_this_machine(&value, &mounts));
                }
                env.push((var, value));
            }
            let file = file.unwrap_or_else(|| panic!("{overlay}: {name}: no TICKMESH_CONFIG"));
            let config = Config::load(Some(Path::new(&file)), env.clone())
                .unwrap_or_else(|e| panic!("{overlay}: {name}: {e}"));
            let component = dep["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .unwrap();
            assert_eq!(
                config.services.resolved(),
                vec![component],
                "{overlay}: {name}"
            );
            services.push(component.to_string());
            assert_eq!(
                Topology::of(&config.redis),
                Ok(Topology::Cluster(seeds.clone())),
                "{overlay}: {name}: the six pods as seeds, in place of redis.url"
            );
            assert!(
                config.marketfeed.durable_acks && config.marketfeed.durable_replicas == 1,
                "{overlay}: {name}: a trade is acknowledged once on its master's replica too"
            );
            assert_eq!(
                config.coupon.replicas_to_wait(true),
                1,
                "{overlay}: {name}: an issuance waits for its replica on the cluster"
            );
            if component == "marketfeed" {
                let feeds = &env.iter().find(|(k, _)| k == "TICKMESH_FEEDS").unwrap().1;
                assert!(!config.feeds.is_empty(), "{overlay}: {feeds}");
                assert_eq!(
                    config.pollers.len(),
                    usize::from(overlay.ends_with("-kis")),
                    "{overlay}: the KIS poller only with its component"
                );
            }
        }
        services.sort();
        assert_eq!(
            services,
            ["candles", "coupon", "marketfeed", "queue", "ranking"],
            "{overlay}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// The object of `kind` named exactly `name` (a generated name with its hash).
fn exact<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    manifests::of_kind(objects, kind)
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Writes the ConfigMaps a workload mounts under `dir`; returns each mount
/// path with the directory standing in for it.
fn mount_config_maps(objects: &[Value], workload: &Value, dir: &Path) -> Vec<(String, PathBuf)> {
    let spec = &workload["spec"]["template"]["spec"];
    let mut mounts = Vec::new();
    for mount in spec["containers"][0]["volumeMounts"].as_array().unwrap() {
        let volume = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let Some(name) = volume["configMap"]["name"].as_str() else {
            continue;
        };
        let local = dir.join(mount["name"].as_str().unwrap());
        std::fs::create_dir_all(&local).unwrap();
        for (key, text) in exact(objects, "ConfigMap", name)["data"]
            .as_object()
            .unwrap()
        {
            std::fs::write(local.join(key), text.as_str().unwrap()).unwrap();
        }
        mounts.push((mount["mountPath"].as_str().unwrap().to_string(), local));
    }
    mounts
}

/// A comma-separated list of files in the pod as the files written here.
fn on_this_machine(files: &str, mounts: &[(String, PathBuf)]) -> String {
    files
        .split(',')
        .map(|f| {
            let (mount, local) = mounts
                .iter()
                .find(|(m, _)| f.starts_with(&format!("{m}/")))
                .unwrap_or_else(|| panic!("{f} is on no mounted ConfigMap"));
            let local = local.join(&f[mount.len() + 1..]);
            assert!(local.is_file(), "{f}: the ConfigMap has no such key");
            local.display().to_string()
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A value for a Secret's key, which the overlays expect to exist (the dev
/// overlay's values for tickmesh-secrets).
fn stand_in_secret(name: &str, key: &str) -> String {
    match name {
        "tickmesh-secrets" => dev_secret()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("the dev Secret has no key {key}")),
        "tickmesh-broker" => format!("test-{key}"),
        other => panic!("a Secret this test does not know: {other}"),
    }
}

fn temp_dir(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("tickmesh-test-{}-{name}", std::process::id()))
        .display()
        .to_string()
}

/// The reader of the rendered manifests, on the shapes kustomize writes.
#[test]
fn the_manifest_reader_reads_what_kustomize_writes() {
    let docs = manifests::parse_documents(
        "apiVersion: v1\ndata:\n  a.sh: |\n    #!/bin/sh\n    echo \"$1\"\n\n    exit 0\n  b: |-\n    x\nkind: ConfigMap\nmetadata:\n  name: c\n---\nkind: Deployment\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - args:\n        - --port\n        - \"6379\"\n        env:\n        - name: A\n          value: \"1\"\n        - name: B\n          valueFrom:\n            fieldRef:\n              fieldPath: metadata.name\n        name: x\n        resources: {}\n",
    );
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0]["data"]["a.sh"],
        "#!/bin/sh\necho \"$1\"\n\nexit 0\n"
    );
    assert_eq!(docs[0]["data"]["b"], "x");
    assert_eq!(docs[1]["spec"]["replicas"], 3);
    assert_eq!(
        manifests::container_list(&docs[1], "args"),
        ["--port", "6379"]
    );
    assert_eq!(
        manifests::container_env(&docs[1]),
        [
            ("A".to_string(), EnvSource::Value("1".into())),
            ("B".to_string(), EnvSource::Field("metadata.name".into()))
        ]
    );
    assert_eq!(
        docs[1]["spec"]["template"]["spec"]["containers"][0]["resources"],
        serde_json::json!({})
    );
}

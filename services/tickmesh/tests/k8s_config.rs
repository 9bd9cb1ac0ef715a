//! The cluster's config (k8s/base/tickmesh.toml) and each workload's
//! TICKMESH_* variables load with the real config loader: a renamed key or an
//! unknown service in the manifests fails here, not in a crash-looping pod.

use std::path::{Path, PathBuf};

use tickmesh_runtime::config::{Config, StoreBackend};

fn k8s(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../k8s")
        .join(path)
}

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

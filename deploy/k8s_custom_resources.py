#!/usr/bin/env python3
"""Checks the custom resources of rendered overlays, which kubernetes-validate
has no schema for, plus the cross-file facts the manifests rely on.

ScyllaCluster (scylla.scylladb.com/v1, Scylla Operator): a documented minimal
check of the fields tickmesh's manifests use, with their types, as the
operator's CRD defines them: spec.version and spec.agentVersion (strings),
spec.developerMode (bool), spec.datacenter.name, and each rack's name,
members (int >= 1), storage.capacity (a quantity) and resources. Unknown
top-level spec fields are refused (typos would be silently ignored by the
operator's defaulting). The check also ties the cluster to tickmesh's config:
the contact point is the operator's `<name>-client` Service in the cluster's
namespace, and the local datacenter and replication map name its datacenter.

PodMonitor (monitoring.coreos.com/v1, Prometheus Operator; only in overlays
with k8s/components/prometheus): its selector picks the tickmesh pods, and
every endpoint's port names a container port of each of them. In every
overlay the metrics wiring holds together: metrics.listen in tickmesh.toml,
each tickmesh Deployment's "metrics" container port and prometheus.io/port
annotation, and the NetworkPolicy that opens that port, agree.

Usage: k8s_custom_resources.py RENDERED.yaml [...]  (exit 1 on any failure)
"""

import re
import sys
import tomllib

import yaml

SPEC_FIELDS = {
    "repository", "version", "agentRepository", "agentVersion", "developerMode",
    "automaticOrphanedNodeCleanup", "datacenter", "sysctls", "network",
    "alternator", "cpuset", "repairs", "backups", "genericUpgrade",
    "podIPAddressSource", "exposeOptions", "imagePullSecrets", "dnsDomains",
    "forceRedeploymentReason", "externalSeeds", "minTerminationGracePeriodSeconds",
    "minReadySeconds", "readinessGates",
}
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?$")


def check_scylla(doc, errors):
    where = f"ScyllaCluster/{doc.get('metadata', {}).get('name')}"
    spec = doc.get("spec") or {}
    for key in sorted(set(spec) - SPEC_FIELDS):
        errors.append(f"{where}: unknown spec field {key!r}")
    for key in ("version", "agentVersion"):
        if not isinstance(spec.get(key), str) or not spec.get(key):
            errors.append(f"{where}: spec.{key} must be a non-empty string")
    if not isinstance(spec.get("developerMode", False), bool):
        errors.append(f"{where}: spec.developerMode must be a boolean")
    dc = spec.get("datacenter") or {}
    if not isinstance(dc.get("name"), str) or not dc.get("name"):
        errors.append(f"{where}: spec.datacenter.name is required")
    racks = dc.get("racks")
    if not isinstance(racks, list) or not racks:
        errors.append(f"{where}: spec.datacenter.racks needs at least one rack")
        racks = []
    for i, rack in enumerate(racks):
        at = f"{where}: spec.datacenter.racks[{i}]"
        if not isinstance(rack.get("name"), str) or not rack.get("name"):
            errors.append(f"{at}.name is required")
        members = rack.get("members")
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            errors.append(f"{at}.members must be an integer >= 1")
        capacity = (rack.get("storage") or {}).get("capacity")
        if not isinstance(capacity, str) or not QUANTITY.match(capacity):
            errors.append(f"{at}.storage.capacity must be a quantity like 10Gi")
        resources = rack.get("resources") or {}
        for part in ("requests", "limits"):
            for res in ("cpu", "memory"):
                value = str((resources.get(part) or {}).get(res, ""))
                if not QUANTITY.match(value):
                    errors.append(f"{at}.resources.{part}.{res} must be a quantity")
    return dc.get("name"), doc.get("metadata", {}).get("namespace")


def tickmesh_deployments(docs):
    return [d for d in docs if d.get("kind") == "Deployment"
            and d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "tickmesh"]


def check_metrics(path, docs, toml, errors):
    listen = tomllib.loads(toml).get("metrics", {}).get("listen", "")
    if not listen:
        errors.append(f"{path}: metrics.listen is not set in tickmesh.toml")
        return
    port = int(listen.rsplit(":", 1)[1])
    for dep in tickmesh_deployments(docs):
        where = f"{path}: Deployment/{dep['metadata']['name']}"
        template = dep["spec"]["template"]
        ports = {p.get("name"): p.get("containerPort")
                 for c in template["spec"]["containers"] for p in c.get("ports", [])}
        if ports.get("metrics") != port:
            errors.append(f"{where}: container port \"metrics\" should be {port} (metrics.listen)")
        annotations = template["metadata"].get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" \
                or annotations.get("prometheus.io/port") != str(port) \
                or annotations.get("prometheus.io/path") != "/metrics":
            errors.append(f"{where}: prometheus.io/* annotations should say scrape, port {port}, /metrics")
    opened = any(
        d.get("kind") == "NetworkPolicy"
        and d["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "tickmesh"
        and any({"protocol": "TCP", "port": port} in rule.get("ports", [])
                for rule in d["spec"].get("ingress", []))
        for d in docs)
    if not opened:
        errors.append(f"{path}: no NetworkPolicy lets a scraper reach port {port} of the tickmesh pods")
    for monitor in [d for d in docs if d.get("kind") == "PodMonitor"]:
        where = f"{path}: PodMonitor/{monitor['metadata']['name']}"
        if monitor.get("apiVersion") != "monitoring.coreos.com/v1":
            errors.append(f"{where}: apiVersion must be monitoring.coreos.com/v1")
        spec = monitor.get("spec") or {}
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        selected = [d for d in tickmesh_deployments(docs)
                    if wanted and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                                      for k, v in wanted.items())]
        if not selected or len(selected) != len(tickmesh_deployments(docs)):
            errors.append(f"{where}: the selector should pick every tickmesh Deployment's pods")
        endpoints = spec.get("podMetricsEndpoints") or []
        if not endpoints:
            errors.append(f"{where}: spec.podMetricsEndpoints is empty")
        for i, endpoint in enumerate(endpoints):
            for dep in selected:
                names = {p.get("name") for c in dep["spec"]["template"]["spec"]["containers"]
                         for p in c.get("ports", [])}
                if endpoint.get("port") not in names:
                    errors.append(f"{where}: podMetricsEndpoints[{i}].port {endpoint.get('port')!r} "
                                  f"is no container port of Deployment/{dep['metadata']['name']}")
            if endpoint.get("path", "/metrics") != "/metrics":
                errors.append(f"{where}: podMetricsEndpoints[{i}].path should be /metrics")


def main(paths):
    errors = []
    for path in paths:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        clusters = [d for d in docs if d.get("kind") == "ScyllaCluster"]
        if len(clusters) != 1:
            errors.append(f"{path}: expected one ScyllaCluster, found {len(clusters)}")
            continue
        dc, namespace = check_scylla(clusters[0], errors)
        name = clusters[0]["metadata"]["name"]
        if clusters[0].get("apiVersion") != "scylla.scylladb.com/v1":
            errors.append(f"{path}: ScyllaCluster apiVersion must be scylla.scylladb.com/v1")
        config_maps = [d for d in docs if d.get("kind") == "ConfigMap"
                       and "tickmesh.toml" in (d.get("data") or {})]
        if len(config_maps) != 1:
            errors.append(f"{path}: expected one ConfigMap holding tickmesh.toml")
            continue
        check_metrics(path, docs, config_maps[0]["data"]["tickmesh.toml"], errors)
        history = tomllib.loads(config_maps[0]["data"]["tickmesh.toml"]).get("history", {})
        expected = f"{name}-client.{namespace}.svc:9042"
        if history.get("scylla_contact_points") != [expected]:
            errors.append(f"{path}: history.scylla_contact_points should be [{expected!r}]")
        if history.get("scylla_local_datacenter") != dc:
            errors.append(f"{path}: history.scylla_local_datacenter should be {dc!r}")
        if f"'{dc}'" not in history.get("scylla_replication", ""):
            errors.append(f"{path}: history.scylla_replication should name datacenter {dc!r}")
    for e in errors:
        print(f"ERROR {e}")
    if not errors:
        print(f"custom resources and config links ok in {len(paths)} overlays")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

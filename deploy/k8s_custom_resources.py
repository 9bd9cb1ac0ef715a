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

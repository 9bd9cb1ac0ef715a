#!/usr/bin/env bash
# Validates the Kubernetes manifests without a cluster: builds every overlay
# with kustomize, validates every object against the Kubernetes schemas
# (strict, two versions), checks the custom resources and the links between
# config and manifests, then runs a security scan. Run by deploy/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/tools.sh
ensure_kubectl
ensure_k8s_validators

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  echo "==> kubectl kustomize $overlay" >&2
  kubectl kustomize "$overlay" > "$out/$name.yaml"
done

# The oldest Kubernetes we support (native sidecar-free gRPC probes and
# preStop sleep need 1.30) and the newest schemas the validator knows.
for version in 1.30.0 ""; do
  echo "==> kubernetes-validate --strict ${version:+-k $version}" >&2
  status=0
  kubernetes-validate --strict --quiet ${version:+-k "$version"} "$out"/*.yaml \
    > "$out/validate.log" 2>&1 || status=$?
  # Only ScyllaCluster and PodMonitor lack a schema here
  # (k8s_custom_resources.py checks them); any other message, warning or
  # error, fails.
  if [ "$status" -ne 0 ] || grep -v -E "Couldn't find schema for kind (ScyllaCluster|PodMonitor)" \
      "$out/validate.log" | grep -q .; then
    cat "$out/validate.log" >&2
    exit 1
  fi
done

echo "==> custom resources" >&2
"$TOOLS_DIR/venv/bin/python" deploy/k8s_custom_resources.py "$out"/*.yaml

echo "==> redis links" >&2
# Every tickmesh Deployment reaches the Redis its overlay deploys: the
# single-node `redis.url` names a Service, and a Redis Cluster's
# TICKMESH_REDIS_CLUSTER_NODES names every pod of a cluster-enabled
# StatefulSet through its headless Service (which publishes names before the
# pods are ready), as many as the bootstrap Job forms.
"$TOOLS_DIR/venv/bin/python" - "$out"/*.yaml <<'PY'
import re, sys, tomllib, yaml
errors = []
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by = lambda kind: {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}
    services, sets, jobs = by("Service"), by("StatefulSet"), by("Job")
    toml = next(d["data"]["tickmesh.toml"] for d in docs
                if d["kind"] == "ConfigMap" and "tickmesh.toml" in (d.get("data") or {}))
    url = tomllib.loads(toml).get("redis", {}).get("url", "")
    for dep in by("Deployment").values():
        if dep["metadata"].get("labels", {}).get("app.kubernetes.io/name") != "tickmesh":
            continue
        where = f"{path}: Deployment/{dep['metadata']['name']}"
        env = {e["name"]: e.get("value") for c in dep["spec"]["template"]["spec"]["containers"]
               for e in c.get("env", [])}
        nodes = [n for n in (env.get("TICKMESH_REDIS_CLUSTER_NODES") or "").split(",") if n]
        if not nodes:
            host = re.match(r"redis://([^:/]+):6379$", url)
            if not host or host.group(1) not in services:
                errors.append(f"{where}: redis.url {url!r} names no Service of the overlay")
            continue
        pods = set()
        for node in nodes:
            m = re.fullmatch(r"redis://(([a-z0-9-]+)-(\d+))\.([a-z0-9-]+)\.([a-z0-9-]+)\.svc:6379", node)
            sts = m and sets.get(m.group(2))
            if not sts or sts["spec"]["serviceName"] != m.group(4) \
                    or sts["metadata"]["namespace"] != m.group(5) \
                    or int(m.group(3)) >= sts["spec"]["replicas"]:
                errors.append(f"{where}: {node} is not a pod of a StatefulSet here")
                continue
            pods.add(m.group(1))
            svc = services.get(m.group(4), {}).get("spec", {})
            if svc.get("clusterIP") != "None" or not svc.get("publishNotReadyAddresses"):
                errors.append(f"{where}: Service {m.group(4)} must be headless and publish not-ready addresses")
            args = sts["spec"]["template"]["spec"]["containers"][0].get("args", [])
            if "--cluster-enabled" not in args or args[args.index("--cluster-enabled") + 1] != "yes":
                errors.append(f"{where}: StatefulSet {m.group(2)} does not run cluster-enabled")
            want = {f"{m.group(2)}-{i}" for i in range(sts["spec"]["replicas"])}
            bootstrap = [c for j in jobs.values() for c in j["spec"]["template"]["spec"]["containers"]
                         if {"name": "SERVICE", "value": m.group(4)} in c.get("env", [])]
            if len(bootstrap) != 1 or {"name": "NODES", "value": str(len(want))} not in bootstrap[0]["env"]:
                errors.append(f"{where}: no bootstrap Job forming the {len(want)} nodes of {m.group(4)}")
        if nodes and pods != want:
            errors.append(f"{where}: TICKMESH_REDIS_CLUSTER_NODES lists {sorted(pods)}, the cluster has {sorted(want)}")
for e in sorted(set(errors)):
    print(f"ERROR {e}")
if errors:
    sys.exit(1)
print(f"redis links ok in {len(sys.argv) - 1} overlays")
PY

echo "==> checkov" >&2
checkov -d "$out" --config-file deploy/checkov.yaml --skip-download
echo "k8s manifests ok" >&2

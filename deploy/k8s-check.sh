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
  # Only ScyllaCluster lacks a schema here (k8s_custom_resources.py checks
  # it); any other message, warning or error, fails.
  if [ "$status" -ne 0 ] || grep -v "Couldn't find schema for kind ScyllaCluster" \
      "$out/validate.log" | grep -q .; then
    cat "$out/validate.log" >&2
    exit 1
  fi
done

echo "==> custom resources" >&2
"$TOOLS_DIR/venv/bin/python" deploy/k8s_custom_resources.py "$out"/*.yaml

echo "==> checkov" >&2
checkov -d "$out" --config-file deploy/checkov.yaml --skip-download
echo "k8s manifests ok" >&2

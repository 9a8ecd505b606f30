#!/usr/bin/env bash
# The deployment files against their specifications: the Dockerfile with hadolint, the compose
# file against the Compose specification, and each Kubernetes overlay, as kustomize renders it,
# against the schemas of the Kubernetes version we support (KUBERNETES_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
KUBERNETES_VERSION=${KUBERNETES_VERSION:-1.34.0}

"$venv/bin/hadolint" Dockerfile
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

if command -v kustomize >/dev/null; then
  render=(kustomize build)
elif command -v kubectl >/dev/null; then
  render=(kubectl kustomize)
else
  echo "check_deploy: neither kustomize nor kubectl is on PATH to render deploy/k8s" >&2
  exit 1
fi
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  "${render[@]}" "$overlay" > "$rendered/$name.yaml"
  "$venv/bin/kubernetes-validate" --kubernetes-version "$KUBERNETES_VERSION" --strict --quiet "$rendered/$name.yaml"
  echo "deploy/k8s/overlays/$name: $(grep -c '^kind:' "$rendered/$name.yaml") resources valid for Kubernetes $KUBERNETES_VERSION"
done

#!/usr/bin/env bash
# Regenerates gen/ (Python, gRPC stubs and .pyi) and envoy/invitemesh.pb (the descriptor set the
# edge transcodes with) from protos/. Both are committed; CI runs this and fails on any diff.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
bin=$(dirname "$py")
wkt=$("$py" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')
protos=$(find protos -name '*.proto' | LC_ALL=C sort)
protoc=("$py" -m grpc_tools.protoc -Iprotos -Ithird_party -I"$wkt")

# Envoy's rate limit service, as far as ratelimit_svc serves it (third_party/envoy says why).
envoy_protos=$(find third_party/envoy_ratelimit -name '*.proto' | sed 's|^third_party/||' | LC_ALL=C sort)

rm -rf gen/invitemesh gen/envoy_ratelimit
mkdir -p gen
"${protoc[@]}" \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out=gen --grpc_python_out=gen --mypy_out=gen --mypy_grpc_out=gen $protos $envoy_protos
find gen/invitemesh gen/envoy_ratelimit -type d -exec touch {}/__init__.py \;

# Envoy turns grpc-status-details-bin into JSON only if it knows the detail types.
"${protoc[@]}" --include_imports --descriptor_set_out=envoy/invitemesh.pb \
  $protos google/rpc/status.proto google/rpc/error_details.proto

# The OpenAPI document of the public and user REST surface (meshctl/openapi.py), with the contracts'
# comments as descriptions, which only a descriptor set with source info carries.
with_comments=$(mktemp)
trap 'rm -f "$with_comments"' EXIT
"${protoc[@]}" --include_imports --include_source_info --descriptor_set_out="$with_comments" $protos
"$py" -m meshctl.openapi "$with_comments" > envoy/openapi.json

# The README's settings tables, from the settings classes.
"$py" scripts/settings_table.py

# deploy/k8s/base: every part's workload and network policy, from the services and contracts.
"$py" scripts/k8s_base.py

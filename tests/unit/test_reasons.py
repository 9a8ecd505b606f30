"""Every `ErrorInfo.reason` the code can give is in the README's table of errors, with the gRPC
code it comes with and the HTTP status a REST client sees."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grpc

from meshctl.local_replies import LOCAL_REPLIES

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mesh", "auth_svc", "invite_svc", "mail_svc", "ratelimit_svc", "admin_svc", "chain_svc")
_REASON = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$|^INTERNAL$|^OVERLOADED$")
# UPPER_SNAKE strings in the code that are not reasons: names of settings, Envoy's enums, files.
_NOT_REASONS = re.compile(r"^MESH_|^NOT_FOUND$|^OVERWRITE_IF_EXISTS_OR_ADD$|^PG_VERSION$")
# What Envoy's transcoder makes of a gRPC code (the same as google.rpc.Code's documented mapping).
_HTTP = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def _reasons_in_the_code() -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and _REASON.match(node.value):
                    found.add(node.value)
    return {reason for reason in found if not _NOT_REASONS.match(reason)}


def _section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Errors")
    return readme[start : readme.index("\n## ", start)]


def _table() -> dict[str, tuple[str, str]]:
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([A-Z_]+) \| ([^|]+) \|", _section(), re.M)
    return {reason: (code, http.strip()) for reason, code, http in rows}


def test_every_reason_in_the_code_is_in_the_readme() -> None:
    missing = _reasons_in_the_code() - _table().keys()

    assert missing == set()


def test_the_table_gives_each_reason_its_code_and_the_http_status_that_code_maps_to() -> None:
    edge = {reply.reason: reply for reply in LOCAL_REPLIES}
    for reason, (code, http) in _table().items():
        assert code in grpc.StatusCode.__members__, reason
        if reason in edge:
            assert (code, http) == (edge[reason].code.name, str(edge[reason].http_status)), reason
        elif code in _HTTP:
            assert http == str(_HTTP[code]), reason
    # One row per reason: none listed twice.
    assert len(_table()) == len(re.findall(r"^\| `[A-Z0-9_]+` \|", _section(), re.M))

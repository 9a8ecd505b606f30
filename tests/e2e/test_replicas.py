"""`meshctl up --replicas 2` under a steady load through the edge, while one replica of each
service in turn is SIGKILLed (bench/replicas.py drives the load and prints the figures)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from bench.replicas import Load, kill_each_service
from mesh.emails import canonical_email
from mesh.services import SERVICES, WEB
from meshctl.caught_mail import read_mail
from tests.e2e.conftest import Mesh, running_mesh, until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_REPLICAS="2") as mesh:
        yield mesh


def pid_of(mesh: Mesh, name: str) -> int:
    return int(next(part["pid"] for part in mesh.stack()["parts"] if part["name"] == name))


def rows(mesh: Mesh, query: str, *args: object) -> list[Any]:
    (database,) = [part["address"] for part in mesh.stack()["parts"] if part["name"] == "postgres"]

    async def fetch() -> list[Any]:
        connection = await asyncpg.connect(database)
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def test_every_service_and_web_svc_run_twice(mesh: Mesh) -> None:
    names = {part["name"] for part in mesh.stack()["parts"]}
    for name in (*(spec.name for spec in SERVICES), WEB.name):
        assert {name, f"{name}.2"} <= names


def test_a_replica_of_each_service_killed_under_load_loses_and_doubles_nothing(mesh: Mesh) -> None:
    codes = [code["code"] for code in json.loads(mesh.ctl("invites", "mint", "--count", "120", "--json").stdout)]
    load = Load(mesh.edge, mesh.state_dir / "mail", codes, workers=3)

    with load.running():
        kill_each_service(load, lambda name: pid_of(mesh, name), settle=3.0)
        # meshctl starts each killed replica again.
        until(lambda: all(part["restarts"] == 1 for part in mesh.stack()["parts"] if part["name"].endswith(".2")
                          and part["kind"] == "service"), "every killed replica started again")  # fmt: skip

    failures = [failure for phase in load.phases for failure in phase.failures]
    assert failures == []
    emails = sorted(load.registered)
    assert emails and set(emails) == load.verified == load.signed_in
    # Each registration answered once, each person an account once, holding one confirmed use.
    assert set(load.registered.values()) == {1}
    canonicals = [canonical_email(email) for email in emails]
    accounts = rows(
        mesh, "SELECT canonical_email, count(*) FROM auth.users WHERE canonical_email = ANY($1) AND state <> 1 "
        "GROUP BY canonical_email", canonicals,
    )  # fmt: skip
    assert {row["canonical_email"]: row["count"] for row in accounts} == dict.fromkeys(canonicals, 1)
    pending = rows(mesh, "SELECT count(*) FROM auth.users WHERE canonical_email = ANY($1) AND state = 1", canonicals)
    assert pending[0]["count"] == 0

    # What the verifications promised goes through the outboxes, retried past the kills: each
    # held use confirmed, and none left live.
    def holds() -> dict[int, int]:
        query = "SELECT state, count(*) FROM invite.holds WHERE canonical_email = ANY($1) GROUP BY state"
        return {row["state"]: row["count"] for row in rows(mesh, query, canonicals)}

    until(lambda: holds() == {2: len(emails)}, "every hold confirmed, none left live")

    # Every mail (the verification code, then the person's own invite codes) sent exactly once.
    def subjects(email: str) -> tuple[int, ...]:
        return tuple(Counter(mail.subject for mail in read_mail(mesh.state_dir / "mail", email)).values())

    until(lambda: all(len(subjects(email)) == 2 for email in emails), "the invite codes mailed")
    assert {email: subjects(email) for email in emails} == dict.fromkeys(emails, (1, 1))

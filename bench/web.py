"""Pages through Envoy, as a browser fetches them, against the REST call each page wraps, in one
run on one stack (`meshctl up`): `/` with a code in its link against CheckCode (the call the page
makes for that code), `/me` against ListMyCodes in its full view (the one call the page makes).
Closed loop at a fixed concurrency on keep-alive connections; every request passes the edge's
rate limits (set so they never refuse). Target: each page at least half the rate of its REST
call, and p99 at most 50 ms at 16 concurrent. Each line also says what a request cost each
process of the stack in CPU: the bound when a target is missed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import uvloop

from bench.harness import (
    JSON,
    Call,
    HttpConnection,
    cpu_seconds,
    http_pool,
    listed,
    median,
    percentile,
    timed_calls,
)
from mesh.ratelimits import PAGES
from meshctl.stack import free_port_base, port_settings

NEVER = "1000000000"
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0
PASSWORD = "a long passphrase for the benchmark"  # noqa: S105 - the benchmark's own account
FULL_VIEW = "GET /v1/users/me/invites?view=INVITE_CODE_VIEW_FULL"
"""/me's one call: the person's codes, each with who joined through it."""
LIMITED = [PAGES, "*", "/invitemesh.invite.v1.InviteService/CheckCode"]


class Stack:
    def __init__(self, state_dir: Path) -> None:
        ports = port_settings(free_port_base())
        self.edge = f"127.0.0.1:{ports['MESH_EDGE_PORT']}"
        self.env = {
            **os.environ,
            **ports,
            "MESH_STATE_DIR": str(state_dir),
            "MESH_LOG_LEVEL": "WARNING",
            "MESH_INVITE_CHECKS_PER_MINUTE": NEVER,
            "MESH_AUTH_REGISTRATIONS_PER_HOUR": NEVER,
        }

    def processes(self) -> dict[str, int]:
        """Each running part's process id, by name (from the stack's own record)."""
        parts = json.loads((Path(self.env["MESH_STATE_DIR"]) / "stack.json").read_text())["parts"]
        return {part["name"]: part["pid"] for part in parts if part.get("pid")}

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "meshctl.cli", *args], env=self.env, capture_output=True, text=True, check=True
        )
        return done.stdout


@contextmanager
def running_stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory() as state:
        stack = Stack(Path(state) / "state")
        stack.ctl("up", "--detach")
        try:
            for route in LIMITED:
                stack.ctl("ratelimits", "set", route, NEVER)
            yield stack
        finally:
            stack.ctl("down")


async def _member(stack: Stack, edge: HttpConnection) -> tuple[str, str]:
    """A verified account with codes of its own: its access token, and a browser signed in as it."""
    (minted,) = json.loads(stack.ctl("invites", "mint", "--campaign", "bench-web", "--invite-quota", "3", "--json"))
    email = f"bench.{os.urandom(4).hex()}@example.com"
    body = {"email": email, "password": PASSWORD, "inviteCode": minted["code"]}
    _, _, registered = await edge.request("POST", "/v1/registrations", json.dumps(body).encode(), JSON)
    code = await _mailed_code(stack, email)
    proof = {"email": email, "code": code, "registration": json.loads(registered)["registration"]}
    _, _, verified = await edge.request("POST", "/v1/registrations:verify", json.dumps(proof).encode(), JSON)
    token = json.loads(verified)["session"]["accessToken"]
    _, answered, page = await edge.request("GET", "/sign-in")
    cookie = answered["set-cookie"].split(";")[0]
    csrf = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    form = urlencode({"csrf": csrf.group(1).decode(), "email": email, "password": PASSWORD}).encode()
    headers = {"cookie": cookie, "content-type": "application/x-www-form-urlencoded"}
    status, answered, _ = await edge.request("POST", "/sign-in", form, headers)
    assert status == 303, status
    return token, answered["set-cookie"].split(";")[0]


async def _mailed_code(stack: Stack, email: str) -> str:
    for _ in range(200):
        for mail in json.loads(await asyncio.to_thread(stack.ctl, "mail", "list", "--to", email, "--json")):
            if found := re.search(r"\b(\d{6})\b", mail["text"]):
                return found.group(1)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"no verification mail to {email}")


def _get(pool: asyncio.Queue[HttpConnection], path: str, headers: dict[str, str], expect: bytes) -> Call:
    async def call() -> None:
        connection = pool.get_nowait()
        try:
            status, _, body = await connection.request("GET", path, headers=headers)
        finally:
            pool.put_nowait(connection)
        assert status == 200 and expect in body, (status, body[:200])

    return call


def _post(pool: asyncio.Queue[HttpConnection], path: str, body: bytes) -> Call:
    async def call() -> None:
        connection = pool.get_nowait()
        try:
            status, _, answer = await connection.request("POST", path, body, JSON)
        finally:
            pool.put_nowait(connection)
        assert status == 200, (status, answer[:200])

    return call


@dataclass(frozen=True)
class Window:
    """One closed-loop window of one way: its rate, each call's seconds, and what each call cost
    each process of the stack in CPU milliseconds."""

    rate: float
    took: list[float]
    cpu_ms: dict[str, float]


async def _window(stack: Stack, call: Call, args: argparse.Namespace) -> Window:
    processes = stack.processes()
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    rate, took = await timed_calls(call, args.seconds, args.concurrency)
    spent = {name: (cpu_seconds(pid) - before[name]) * 1000 / len(took) for name, pid in processes.items()}
    return Window(rate, took, spent)


async def measure(args: argparse.Namespace) -> None:
    with running_stack() as stack:
        async with AsyncExitStack() as exits:
            pool = await exits.enter_async_context(http_pool(stack.edge, args.concurrency))
            token, cookie = await _member(stack, pool.get_nowait())
            pool.put_nowait(await HttpConnection.open(stack.edge))
            (code,) = json.loads(stack.ctl("invites", "mint", "--json"))
            ways = {
                "GET /": _get(pool, f"/?{urlencode({'code': code['code']})}", {"cookie": cookie}, b"Reserve your spot"),
                "POST /v1/invites:check": _post(pool, "/v1/invites:check", json.dumps({"code": code["code"]}).encode()),
                "GET /me": _get(pool, "/me", {"cookie": cookie}, b"Your codes"),
                FULL_VIEW: _get(pool, FULL_VIEW.split()[1], {"authorization": f"Bearer {token}"}, b"codes"),
            }
            windows: dict[str, list[Window]] = {way: [] for way in ways}
            for round_ in range(args.rounds + 1):  # the first round warms every path up
                for way, call in ways.items():
                    measured = await _window(stack, call, args)
                    if round_:
                        windows[way].append(measured)
    _report(args, windows)


def _report(args: argparse.Namespace, windows: dict[str, list[Window]]) -> None:
    print(f"pages through Envoy, {args.concurrency} concurrent, {args.rounds} rounds of {args.seconds:g} s")
    for page, rest in (("GET /", "POST /v1/invites:check"), ("GET /me", FULL_VIEW)):
        for way in (page, rest):
            rates = [window.rate for window in windows[way]]
            took = [seconds for window in windows[way] for seconds in window.took]
            cost = {name: median([w.cpu_ms[name] for w in windows[way]]) for name in windows[way][0].cpu_ms}
            spent = "  ".join(
                f"{name} {ms:.2f}" for name, ms in sorted(cost.items(), key=lambda item: -item[1]) if ms >= 0.05
            )
            print(
                f"{way:<26} per s median {median(rates):6.0f} (rounds {listed(rates)})"
                f"   p50 {percentile(took, 0.5) * 1000:5.1f} ms   p99 {percentile(took, 0.99) * 1000:5.1f} ms"
            )
            print(f"{'':<26} CPU ms per request: {spent}")
        ratios = [p.rate / r.rate for p, r in zip(windows[page], windows[rest], strict=True)]
        page_p99 = percentile([s for window in windows[page] for s in window.took], 0.99) * 1000
        print(
            f"{'':<26} page/REST ratio median {median(ratios):.2f} (rounds {listed(ratios, 2)})"
            f"   target >= {TARGET_RATIO:.2f}; page p99 {page_p99:.1f} ms, target <= {TARGET_P99_MS:.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    uvloop.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()

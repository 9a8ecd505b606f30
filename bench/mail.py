"""Emails per second from SendEmail to accepted by an SMTP sink, against the raw SMTP ceiling.

In one run: a counting aiosmtpd sink in a process of its own; the raw ceiling, aiosmtplib from
this process straight to that sink over reused connections, as many as the pipeline has senders;
then the pipeline: mail_svc in its own process (logging and queueing), 1 and then 4 sender
processes (`python -m mail_svc.worker`, `--senders` connections each) and this process calling
SendEmail, signed as auth_svc, from 64 callers. A rate is messages over the time from the first
message sent (or SendEmail called) to the sink's acceptance of the last. Each phase warms up with
a few hundred messages first.

    .venv/bin/python -m bench.mail [--messages 10000] [--senders 4] [--rounds 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import aiosmtplib
import uvloop
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from invitemesh.mail.v1 import mail_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2_grpc

from bench.harness import backends, listed, median, serve_here, server_process, signed_channel
from mail_svc.server import add_servicers
from mail_svc.templates import Renderer, Template, mime_message
from mesh.services import MAIL
from mesh.settings import Settings
from meshctl.embedded import free_port

SENDER = "invitemesh <no-reply@bench.invitemesh>"
CALLERS = 64
WARM_UP = 300


class _Counting:
    """The sink's handler: counts messages and says when an expected number has arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target: int | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.count += 1
            if self.target is not None and self.count >= self.target:
                self.target = None
                print("done", flush=True)
        return "250 OK"


def sink(port: int) -> None:
    """The `--sink` side: accept everything; on `expect N` from stdin, print `done` after N more."""
    handler = _Counting()
    controller = Controller(handler, hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    print("ready", flush=True)
    for line in sys.stdin:
        with handler.lock:
            handler.target = handler.count + int(line.split()[1])
    controller.stop()


class Sink:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self._process = process
        self.url = f"smtp://127.0.0.1:{port}"

    async def expecting(self, count: int, work: Callable[[], Awaitable[object]]) -> float:
        """Seconds from starting `work` to the sink having accepted `count` more messages."""
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(f"expect {count}\n")
        self._process.stdin.flush()
        started = time.perf_counter()
        done = asyncio.ensure_future(asyncio.to_thread(self._process.stdout.readline))
        await work()
        await done
        return time.perf_counter() - started


@contextmanager
def running_sink() -> Iterator[Sink]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.mail", "--sink", str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    try:
        yield Sink(process, port)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=30)


def _message() -> bytes:
    rendered = Renderer().render(Template.VERIFICATION, {"code": "123456"})
    return mime_message(uuid.uuid4(), SENDER, "ada@example.com", rendered)


async def raw_smtp(sink: Sink, messages: int, connections: int) -> float:
    """aiosmtplib straight to the sink: `connections` reused connections share the messages."""
    message = _message()
    queue: asyncio.Queue[None] = asyncio.Queue()
    for _ in range(messages):
        queue.put_nowait(None)

    async def sender() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=int(sink.url.rsplit(":", 1)[1])) as smtp:
            while not queue.empty():
                queue.get_nowait()
                await smtp.sendmail("no-reply@bench.invitemesh", ["ada@example.com"], message)

    async def send_all() -> None:
        await asyncio.gather(*(sender() for _ in range(connections)))

    await send_all_warm(sink, connections)
    return messages / await sink.expecting(messages, send_all)


async def send_all_warm(sink: Sink, connections: int) -> None:
    message = _message()
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=int(sink.url.rsplit(":", 1)[1])) as smtp:
        for _ in range(connections):
            await smtp.sendmail("no-reply@bench.invitemesh", ["ada@example.com"], message)


@contextmanager
def sender_processes(count: int, env: dict[str, str]) -> Iterator[None]:
    processes = [subprocess.Popen([sys.executable, "-m", "mail_svc.worker"], env=env) for _ in range(count)]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)


@asynccontextmanager
async def mail_service(
    settings: Settings, env: dict[str, str]
) -> AsyncIterator[mail_service_pb2_grpc.MailServiceAsyncStub]:
    async with (
        server_process("bench.mail", settings, env) as served,
        signed_channel(served.address, settings, "auth_svc") as channel,
    ):
        yield mail_service_pb2_grpc.MailServiceStub(channel)


async def pipeline(settings: Settings, sink: Sink, messages: int, workers: int, senders: int) -> float:
    env = {
        **os.environ,
        **settings.environment(),
        "MESH_SMTP_URL": sink.url,
        "MESH_MAIL_STREAM": f"bench-{secrets.token_hex(4)}",
        "MESH_MAIL_FROM": SENDER,
    }
    async with mail_service(settings, {**env, "MESH_MAIL_SENDERS": "0"}) as mail:

        async def send(count: int) -> None:
            remaining = iter(range(count))

            async def caller() -> None:
                for _ in remaining:
                    await mail.SendEmail(
                        pb.SendEmailRequest(
                            template=pb.EMAIL_TEMPLATE_VERIFICATION,
                            to="ada@example.com",
                            variables={"code": "123456"},
                            idempotency_key=uuid.uuid4().hex,
                        )
                    )

            await asyncio.gather(*(caller() for _ in range(CALLERS)))

        with sender_processes(workers, {**env, "MESH_MAIL_SENDERS": str(senders)}):
            await sink.expecting(WARM_UP, lambda: send(WARM_UP))
            return messages / await sink.expecting(messages, lambda: send(messages))


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    results: dict[int, tuple[list[float], list[float]]] = {1: ([], []), 4: ([], [])}
    with running_sink() as counting:
        for _ in range(args.rounds):
            for workers, (raw_rates, pipeline_rates) in results.items():
                raw_rates.append(await raw_smtp(counting, args.messages, workers * args.senders))
                pipeline_rates.append(await pipeline(settings, counting, args.messages, workers, args.senders))
    print(f"mail bench: {args.messages} messages per phase, {args.senders} senders per process, {args.rounds} round(s)")
    for workers, (raw, piped) in results.items():
        ratios = [p / r for p, r in zip(piped, raw, strict=True)]
        connections = workers * args.senders
        print(
            f"raw SMTP, {connections:>2} connections         emails/s median {median(raw):7.0f}   rounds {listed(raw)}"
        )
        print(f"pipeline, {workers} sender process(es)   emails/s median {median(piped):7.0f}   rounds {listed(piped)}")
        ratio_line = f"median {median(ratios):.2f}   rounds {listed(ratios, 2)}"
        print(f"pipeline / raw ({workers} process(es))    {ratio_line}   target >= 0.70")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_here(MAIL, add_servicers)
    elif args.sink:
        sink(args.sink)
    else:
        with backends() as settings:
            uvloop.run(measure(args, settings))


if __name__ == "__main__":
    main()

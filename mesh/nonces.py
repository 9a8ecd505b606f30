"""The nonce ledger of signed calls: Redis `SET <key> 1 NX EX <ttl>` per nonce, so a nonce is
accepted once across every replica of a service (DESIGN §5).

It sits on the path of every internal call, so it speaks RESP itself on one connection of its own
instead of going through redis-py's per-command machinery, which cost more CPU per call than the
ECDSA verification it follows (bench/signing.py measures both), and hiredis parses the replies,
which Redis returns in order.

Commands leave in batches, at most one write per `flush_interval`: a sighting that comes after a
quiet spell is written at once, and the ones that follow it within the interval wait for the
next write. grpc.aio hands a server one new call per event-loop turn, so writing once per turn
made every sighting a write, a read and a Redis wake-up of its own: under load those cost more
than the signature check. A busy service now waits at most `flush_interval` per sighting, and an
idle one not at all. The interval is a deployment choice (`MESH_NONCE_FLUSH_INTERVAL`); 0 writes
once per loop turn.

Failure is loud, never silent: a lost connection, a Redis that stops answering for `timeout`
seconds or an error reply fails every waiting sighting with a `RedisError`, and the next sighting
connects again. The signature verifier turns that into a refusal (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis import exceptions
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection


class NonceLedger:
    """Answers True for the first sighting of a key and False for every later one."""

    def __init__(self, redis: aioredis.Redis, ttl: int, timeout: float = 2.0, flush_interval: float = 0.0) -> None:
        # A connection object of the client's pool describes where and how to connect (host or
        # socket path, TLS, credentials, database); it is never connected itself.
        self._endpoint: AbstractConnection = redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        self._ttl = str(ttl).encode()
        self._timeout = timeout
        self._flush_interval = flush_interval
        self._pipeline: _Pipeline | None = None
        self._connecting = asyncio.Lock()

    async def first_sighting(self, key: str) -> bool:
        pipeline = self._pipeline
        if pipeline is None or pipeline.broken:
            pipeline = await self._connect()
        reply = await pipeline.send(_packed(b"SET", key, b"1", b"NX", b"EX", self._ttl))
        return reply is not None

    async def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()

    async def _connect(self) -> _Pipeline:
        async with self._connecting:
            if self._pipeline is not None and not self._pipeline.broken:
                return self._pipeline
            try:
                async with asyncio.timeout(self._timeout):
                    pipeline = await self._open()
                    try:
                        for command in _handshake(self._endpoint):
                            await pipeline.send(_packed(*command))
                    except BaseException:
                        pipeline.close()
                        raise
            except (OSError, TimeoutError):
                raise exceptions.ConnectionError("cannot reach the nonce store") from None
            self._pipeline = pipeline
            return pipeline

    async def _open(self) -> _Pipeline:
        loop = asyncio.get_running_loop()
        endpoint = self._endpoint

        def pipeline() -> _Pipeline:
            return _Pipeline(loop, self._timeout, self._flush_interval)

        if isinstance(endpoint, UnixDomainSocketConnection):
            _, opened = await loop.create_unix_connection(pipeline, endpoint.path)
        else:
            tls = endpoint.ssl_context.get() if isinstance(endpoint, SSLConnection) else None
            _, opened = await loop.create_connection(pipeline, endpoint.host, endpoint.port, ssl=tls)  # type: ignore[attr-defined]
        return opened


def _packed(*command: str | bytes | int) -> bytes:
    return hiredis.pack_command(command)  # type: ignore[arg-type,no-any-return]


def _handshake(endpoint: AbstractConnection) -> list[tuple[str | bytes | int, ...]]:
    """The commands that make a fresh connection act as the client's would: AUTH, SELECT."""
    commands: list[tuple[str | bytes | int, ...]] = []
    if endpoint.credential_provider is not None:
        commands.append(("AUTH", *endpoint.credential_provider.get_credentials()))
    elif endpoint.password:
        commands.append(("AUTH", *([endpoint.username] if endpoint.username else []), endpoint.password))
    if endpoint.db:
        commands.append(("SELECT", endpoint.db))
    return commands


class _Pipeline(asyncio.Protocol):
    """One Redis connection: commands out in at most one write per flush interval, replies back
    in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float, flush_interval: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._flush_interval = flush_interval
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []
        self._last_flush = -math.inf
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._failure: exceptions.RedisError | None = None
        self._last_reply = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    @property
    def broken(self) -> bool:
        return self._failure is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though uvloop's is no subclass of asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self._failure is not None:
            raise self._failure
        reply = self._loop.create_future()
        if not self._waiting:
            self._last_reply = self._loop.time()
            if self._watchdog is None:
                self._watchdog = self._loop.call_later(self._timeout, self._check_progress)
        self._waiting.append(reply)
        if not self._outgoing:
            due = self._last_flush + self._flush_interval
            if due <= self._loop.time():
                self._loop.call_soon(self._flush)
            else:
                self._loop.call_at(due, self._flush)
        self._outgoing.append(command)
        return reply

    def _flush(self) -> None:
        self._last_flush = self._loop.time()
        if self._transport is not None and self._failure is None:
            self._transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        self._last_reply = self._loop.time()
        try:
            while (reply := self._parser.gets()) is not False:
                waiter = self._waiting.popleft()
                if waiter.done():  # its caller was cancelled; the reply is still its own
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    waiter.set_exception(exceptions.ResponseError(str(reply)))
                else:
                    waiter.set_result(reply)
        except (hiredis.ProtocolError, IndexError):
            self._fail(exceptions.ConnectionError("the nonce store answered out of protocol"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exceptions.ConnectionError("connection to the nonce store lost"))

    def close(self) -> None:
        self._fail(exceptions.ConnectionError("the nonce ledger is closed"))

    def _check_progress(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        silent_until = self._last_reply + self._timeout
        if self._loop.time() >= silent_until:
            self._fail(exceptions.TimeoutError("the nonce store did not answer in time"))
        else:
            self._watchdog = self._loop.call_at(silent_until, self._check_progress)

    def _fail(self, failure: exceptions.RedisError) -> None:
        if self._failure is None:
            self._failure = failure
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(failure)
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.abort()

"""Redis spoken directly, for the few commands on a service's busiest paths: one connection of
its own, commands from concurrent callers gathered into one write (mesh.pipelining), replies
parsed by hiredis and matched in order.

redis-py's per-command machinery (a pooled connection checked out and back, retries, a parser
object, a write and a read per command) costs more CPU than the work around these commands:
the nonce check of every signed call (mesh.nonces), request budgets (mesh.limits) and the
double-submit marks of registrations. A pipe gathers its writes per `flush_interval`.

Kept because it pays: bench/redis_paths.py measures it against redis-py's pooled client on those
paths, and redis-py took 4 to 8 times the CPU per call (nonce 79 against 10 µs, session check 69
against 10, budget 106 against 25) and managed a fifth to a third of the calls per second.

Failure is loud, never silent: a lost connection or a Redis that stops answering for `timeout`
seconds fails every waiting command with a `RedisError`, and the next command connects again.
An error reply fails only its own command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
import redis.asyncio as aioredis
from redis import exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, SSLConnection, UnixDomainSocketConnection
from redis.crc import key_slot

from mesh.pipelining import BatchedWrites, SilenceWatch
from mesh.redis import Argument


class RedisPipe:
    """Sends commands to the Redis `redis` connects to, over a connection of its own; with a
    Redis Cluster's client, to the node that holds each command's key, over a pipe per node."""

    def __init__(self, redis: aioredis.Redis, timeout: float = 2.0, flush_interval: float = 0.0) -> None:
        self._timeout = timeout
        self._flush_interval = flush_interval
        self._pipeline: _Pipeline | None = None
        self._connecting = asyncio.Lock()
        self._cluster = redis if isinstance(redis, RedisCluster) else None
        self._nodes: dict[str, RedisPipe] = {}
        if self._cluster is None:
            # A connection object of the client's pool describes where and how to connect (host
            # or socket path, TLS, credentials, database); it is never connected itself.
            self._endpoint: AbstractConnection = redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]

    async def execute(self, *command: Argument) -> Any:
        """The reply to `command` (bytes, int, None or a list of those)."""
        if self._cluster is not None:
            return (await self._routed([command]))[0]
        return await (await self._connected()).send(_packed(*command))

    async def execute_all(self, commands: Sequence[Sequence[Argument]]) -> list[Any]:
        """The replies to `commands`, sent together and in this order."""
        if self._cluster is not None:
            return await self._routed(commands)
        pipeline = await self._connected()
        return list(await asyncio.gather(*(pipeline.send(_packed(*command)) for command in commands)))

    async def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.close()
        for node in self._nodes.values():
            await node.close()
        self._nodes.clear()

    async def _routed(self, commands: Sequence[Sequence[Argument]]) -> list[Any]:
        """Each command on its key's node; once more after the cluster's slots moved (MOVED).
        A cluster that cannot be reached fails as a single Redis would, with a ConnectionError."""
        assert self._cluster is not None
        try:
            await self._cluster.initialize()
            try:
                return await self._sent(commands)
            except exceptions.ResponseError as error:
                if not str(error).startswith(("MOVED", "ASK")):
                    raise
            await self._cluster.nodes_manager.initialize()
            return await self._sent(commands)
        except exceptions.RedisClusterException as error:
            raise exceptions.ConnectionError(f"cannot reach the Redis Cluster: {error}") from None

    async def _sent(self, commands: Sequence[Sequence[Argument]]) -> list[Any]:
        return list(await asyncio.gather(*(self._node(command).execute(*command) for command in commands)))

    def _node(self, command: Sequence[Argument]) -> RedisPipe:
        assert self._cluster is not None
        node = self._cluster.nodes_manager.get_node_from_slot(key_slot(_encoded(_key_of(command))))
        if node.name not in self._nodes:
            settings = self._cluster.connection_kwargs
            client = aioredis.Redis(
                host=node.host,
                port=node.port,
                username=settings.get("username"),
                password=settings.get("password"),
                ssl=settings.get("connection_class") is SSLConnection,
            )
            self._nodes[node.name] = RedisPipe(client, self._timeout, self._flush_interval)
        return self._nodes[node.name]

    async def _connected(self) -> _Pipeline:
        pipeline = self._pipeline
        if pipeline is None or pipeline.broken:
            pipeline = await self._connect()
        return pipeline

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
                raise exceptions.ConnectionError("cannot reach Redis") from None
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


def _key_of(command: Sequence[Argument]) -> Argument:
    """The (first) key of a command the mesh sends: after the script and its key count for a
    script, else the first argument."""
    name = _encoded(command[0]).upper()
    return command[3] if name in (b"EVAL", b"EVALSHA") else command[1]


def _encoded(argument: Argument) -> bytes:
    return argument if isinstance(argument, bytes) else str(argument).encode()


def _packed(*command: Argument) -> bytes:
    return hiredis.pack_command(command)  # type: ignore[arg-type,no-any-return]


def _handshake(endpoint: AbstractConnection) -> list[tuple[Argument, ...]]:
    """The commands that make a fresh connection act as the client's would: AUTH, SELECT."""
    commands: list[tuple[Argument, ...]] = []
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
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._writes = BatchedWrites(loop, flush_interval)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._failure: exceptions.RedisError | None = None
        self._silence = SilenceWatch(
            loop,
            timeout,
            lambda: bool(self._waiting),
            lambda: self._fail(exceptions.TimeoutError("Redis did not answer in time")),
        )

    @property
    def broken(self) -> bool:
        return self._failure is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though uvloop's is no subclass of asyncio.Transport.
        self._transport = self._writes.transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self._failure is not None:
            raise self._failure
        reply = self._loop.create_future()
        if not self._waiting:
            self._silence.asked()
        self._waiting.append(reply)
        self._writes.add(command)
        return reply

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        self._silence.answered()
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
            self._fail(exceptions.ConnectionError("Redis answered out of protocol"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = self._writes.transport = None
        self._fail(exceptions.ConnectionError("connection to Redis lost"))

    def close(self) -> None:
        self._fail(exceptions.ConnectionError("the Redis pipe is closed"))

    def _fail(self, failure: exceptions.RedisError) -> None:
        if self._failure is None:
            self._failure = failure
        self._writes.transport = None
        self._silence.stop()
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(failure)
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.abort()

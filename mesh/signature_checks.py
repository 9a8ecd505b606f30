"""The ECDSA check of signed calls, in a helper process beside the service.

A service serves on one event-loop thread, and a P-256 signature check holds that thread for
about 40 µs: more than everything else a signed call adds together. A thread gains nothing here:
cryptography lets go of the GIL only during the check itself, and taking it back after each one
costs about as much as the check. A helper process
(`python -m mesh.signature_checks`) does the checks on another core. The service writes it
records of (public key, signature, SHA-256 digest of the signed payload), gathered like the
nonce writes (mesh.pipelining), and reads back one byte per record, in order.

The helper only ever sees public data, and a call never depends on it, only its speed does: it is
started on first use, and while none runs (starting, gone, or not wanted) the check runs in
process. Checks in flight when the helper exits, or leaves them unanswered for `silence_allowed`
seconds, are redone in process; a helper that went is started again, at most once per
`restart_delay`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import deque
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mesh.pipelining import BatchedWrites, SilenceWatch

if TYPE_CHECKING:  # the helper process imports this module, and needs no settings or keystore
    from mesh.keys import TrustedKey

log = structlog.get_logger("mesh.signature_checks")

_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
DIGEST_SIZE = 32
MAX_SIGNATURE_SIZE = 72
"""A DER-encoded P-256 signature is at most this long; a longer one cannot be valid."""
_VALID, _INVALID = 1, 0
_KNOWN_KEYS_KEPT = 256


def signature_valid(key: ec.EllipticCurvePublicKey, signature: bytes, digest: bytes) -> bool:
    """Whether `signature` is `key`'s ECDSA signature of the payload whose SHA-256 is `digest`."""
    try:
        key.verify(signature, digest, _PREHASHED)
    except InvalidSignature:
        return False
    return True


class SignatureChecks:
    """Checks signatures in a helper process when `offloaded`, else in process."""

    def __init__(
        self, flush_interval: float, offloaded: bool = True, silence_allowed: float = 2.0, restart_delay: float = 5.0
    ) -> None:
        self._flush_interval = flush_interval
        self._offloaded = offloaded
        self._silence_allowed = silence_allowed
        self._restart_delay = restart_delay
        self._helper: _Helper | None = None
        self._starting: asyncio.Task[None] | None = None
        self._next_start = float("-inf")
        self._closed = False

    @property
    def offloaded(self) -> bool:
        """Whether checks go to a helper, gathered, so that verdicts come back a batch at a time."""
        return self._offloaded

    @property
    def flush_interval(self) -> float:
        return self._flush_interval

    @property
    def helper_pid(self) -> int | None:
        """The running helper's process id, if one runs."""
        helper = self._helper
        return helper.pid if helper is not None and not helper.gone else None

    async def valid(self, key: TrustedKey, signature: bytes, digest: bytes) -> bool:
        """Whether `signature` is `key`'s ECDSA signature of the payload whose SHA-256 is `digest`."""
        if len(signature) > MAX_SIGNATURE_SIZE or len(digest) != DIGEST_SIZE:
            return False
        helper = self._running_helper()
        if helper is None:
            return signature_valid(key.key, signature, digest)
        return await helper.check(key, signature, digest)

    async def start(self) -> None:
        """Starts the helper now rather than on first use; returns once it runs, or could not
        start (then checks stay in process until the next try)."""
        if self._offloaded and not self._closed and self.helper_pid is None:
            await (self._starting or self._begin_start())

    async def close(self) -> None:
        self._closed = True
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._helper is not None:
            await self._helper.close()

    def _running_helper(self) -> _Helper | None:
        if self._helper is not None and not self._helper.gone:
            return self._helper
        due = self._offloaded and not self._closed and self._starting is None
        if due and asyncio.get_running_loop().time() >= self._next_start:
            self._begin_start()
        return None

    def _begin_start(self) -> asyncio.Task[None]:
        loop = asyncio.get_running_loop()
        self._next_start = loop.time() + self._restart_delay
        self._starting = loop.create_task(self._start())
        return self._starting

    async def _start(self) -> None:
        try:
            if self._helper is not None:
                await self._helper.close()
            self._helper = await _Helper.start(self._flush_interval, self._silence_allowed)
        except Exception as error:  # whatever it is, the checks go on in process
            log.warning("signature checks stay in process: cannot start the helper", error=repr(error))
        finally:
            self._starting = None


class _Helper(asyncio.Protocol):
    """One helper process: records out through its stdin, verdicts back through its stdout."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        process: subprocess.Popen[bytes],
        flush_interval: float,
        silence_allowed: float,
    ) -> None:
        self._loop = loop
        self._process = process
        self._writes = BatchedWrites(loop, flush_interval)
        self._pending: deque[tuple[asyncio.Future[bool], ec.EllipticCurvePublicKey, bytes, bytes]] = deque()
        self._silence = SilenceWatch(loop, silence_allowed, lambda: bool(self._pending), self.lost)
        self._pipes: list[asyncio.BaseTransport] = []
        self.gone = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @classmethod
    async def start(cls, flush_interval: float, silence_allowed: float) -> _Helper:
        # subprocess spawns with vfork where it can, so no fork handlers run here (gRPC's would
        # warn about its threads); in a thread, because the loop serves meanwhile.
        process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", "mesh.signature_checks"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stdout is not None
        loop = asyncio.get_running_loop()
        helper = cls(loop, process, flush_interval, silence_allowed)
        try:
            writer, _ = await loop.connect_write_pipe(lambda: _WriteSide(helper), process.stdin)
            helper._pipes.append(writer)
            reader, _ = await loop.connect_read_pipe(lambda: helper, process.stdout)
            helper._pipes.append(reader)
        except BaseException:
            await helper.close()
            raise
        helper._writes.transport = writer
        log.debug("signature check helper started", pid=process.pid)
        return helper

    def check(self, key: TrustedKey, signature: bytes, digest: bytes) -> asyncio.Future[bool]:
        verdict = self._loop.create_future()
        if not self._pending:
            self._silence.asked()
        self._pending.append((verdict, key.key, signature, digest))
        self._writes.add(record(key.point, signature, digest))
        return verdict

    def data_received(self, data: bytes) -> None:
        if len(data) > len(self._pending):
            self.lost()
            return
        self._silence.answered()
        for byte in data:
            verdict = self._pending.popleft()[0]
            if not verdict.done():  # its call was cancelled
                verdict.set_result(byte == _VALID)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()

    def lost(self) -> None:
        """The helper went away, fell silent or answered out of turn: checks in flight are made
        here, and it is ended."""
        if not self.gone:
            log.warning("signature check helper gone; checking in process until it is back", pid=self.pid)
            self._end()
            self._loop.run_in_executor(None, self._process.wait)  # reaped off the loop

    async def close(self) -> None:
        self._end()
        await asyncio.to_thread(self._process.wait)

    def _end(self) -> None:
        self.gone = True
        self._writes.transport = None
        self._silence.stop()
        while self._pending:
            verdict, key, signature, digest = self._pending.popleft()
            if not verdict.done():
                verdict.set_result(signature_valid(key, signature, digest))
        for pipe in self._pipes:
            pipe.close()
        if self._process.poll() is None:
            self._process.kill()


class _WriteSide(asyncio.BaseProtocol):
    def __init__(self, helper: _Helper) -> None:
        self._helper = helper

    def connection_lost(self, exc: Exception | None) -> None:
        self._helper.lost()


def record(point: bytes, signature: bytes, digest: bytes) -> bytes:
    """One check as the helper reads it: each field but the fixed-size digest after its length."""
    return b"".join((bytes((len(point),)), point, bytes((len(signature),)), signature, digest))


def _record_at(buffer: bytes, offset: int) -> tuple[bytes, bytes, bytes, int] | None:
    """The (point, signature, digest) record at `offset` and the offset after it, or None while
    the record is incomplete."""
    if offset >= len(buffer):
        return None
    point_end = offset + 1 + buffer[offset]
    if point_end >= len(buffer):
        return None
    signature_end = point_end + 1 + buffer[point_end]
    digest_end = signature_end + DIGEST_SIZE
    if digest_end > len(buffer):
        return None
    return (
        buffer[offset + 1 : point_end],
        buffer[point_end + 1 : signature_end],
        buffer[signature_end:digest_end],
        digest_end,
    )


def _verdict(keys: dict[bytes, ec.EllipticCurvePublicKey], point: bytes, signature: bytes, digest: bytes) -> int:
    key = keys.get(point)
    if key is None:
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except ValueError:
            return _INVALID
        if len(keys) >= _KNOWN_KEYS_KEPT:
            keys.clear()
        keys[point] = key
    return _VALID if signature_valid(key, signature, digest) else _INVALID


def serve_checks(requests: int, verdicts: int) -> None:
    """The helper: reads records from fd `requests` until it closes, writes a verdict byte for
    each to fd `verdicts`."""
    keys: dict[bytes, ec.EllipticCurvePublicKey] = {}
    buffer = b""
    while chunk := os.read(requests, 1 << 16):
        buffer += chunk
        answers = bytearray()
        offset = 0
        while (record := _record_at(buffer, offset)) is not None:
            point, signature, digest, offset = record
            answers.append(_verdict(keys, point, signature, digest))
        buffer = buffer[offset:]
        view = memoryview(answers)
        while view:
            view = view[os.write(verdicts, view) :]


if __name__ == "__main__":
    # The service ends its helper by closing its stdin; a Ctrl-C meant for the service, sent to
    # the whole process group, must not cut it off mid-record with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve_checks(sys.stdin.fileno(), sys.stdout.fileno())

"""Signature checks in a real helper process: the same verdicts as in process, and no check lost
or wrong when the helper is killed, hangs or is not wanted."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.keys import TrustedKey
from mesh.signature_checks import SignatureChecks, record
from tests.conftest import eventually

SIGNER = ec.generate_private_key(ec.SECP256R1())
KEY = TrustedKey.of(SIGNER.public_key())
OTHER_KEY = TrustedKey.of(ec.generate_private_key(ec.SECP256R1()).public_key())


def signed(payload: bytes) -> tuple[bytes, bytes]:
    return SIGNER.sign(payload, ec.ECDSA(hashes.SHA256())), hashlib.sha256(payload).digest()


SIGNATURE, DIGEST = signed(b"a signed payload")


def waiting_for(pid: int) -> int:
    """Bytes in the pipe to `pid`'s stdin that it has not read."""
    pipe = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return int(struct.unpack("i", fcntl.ioctl(pipe, termios.FIONREAD, bytes(4)))[0])
    finally:
        os.close(pipe)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except OSError:  # reaped: gone from /proc, or going while read
        return False
    return state != "Z"  # a killed child not yet reaped is a zombie


@pytest.fixture
async def checks() -> AsyncIterator[SignatureChecks]:
    checks = SignatureChecks(flush_interval=0.002, silence_allowed=0.5, restart_delay=0.1)
    await checks.start()
    assert checks.helper_pid is not None
    yield checks
    await checks.close()


async def test_the_helper_gives_the_verdicts_a_check_in_process_gives(checks: SignatureChecks) -> None:
    payloads = [f"call {n}".encode() for n in range(50)]
    cases = [(KEY, *signed(payload)) for payload in payloads]
    cases += [(OTHER_KEY, *signed(payload)) for payload in payloads[:5]]
    cases += [(KEY, signature, hashlib.sha256(b"other").digest()) for signature, _ in map(signed, payloads[:5])]
    cases += [(KEY, SIGNATURE[:-2], DIGEST), (KEY, b"", DIGEST), (KEY, SIGNATURE + bytes(200), DIGEST)]

    verdicts = await asyncio.gather(*(checks.valid(key, signature, digest) for key, signature, digest in cases))

    assert verdicts == [True] * 50 + [False] * 13
    assert checks.helper_pid is not None


async def test_the_helper_starts_on_first_use_and_ends_when_closed() -> None:
    checks = SignatureChecks(flush_interval=0.0)
    assert checks.helper_pid is None

    assert await checks.valid(KEY, SIGNATURE, DIGEST)  # in process while the helper starts
    await eventually(lambda: _true(checks.helper_pid is not None), what="helper started")
    pid = checks.helper_pid
    assert pid is not None and alive(pid)
    assert await checks.valid(KEY, SIGNATURE, DIGEST)

    await checks.close()
    assert not alive(pid)
    assert checks.helper_pid is None
    assert await checks.valid(KEY, SIGNATURE, DIGEST)  # closed: in process, no new helper
    await checks.start()
    assert checks.helper_pid is None


async def test_checks_in_flight_when_the_helper_is_killed_are_made_in_process(checks: SignatureChecks) -> None:
    pid = checks.helper_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it takes records but answers none
    cases = [(KEY, *signed(f"call {n}".encode())) for n in range(20)] + [(OTHER_KEY, SIGNATURE, DIGEST)]
    pending = [asyncio.ensure_future(checks.valid(*case)) for case in cases]
    sent = sum(len(record(key.point, signature, digest)) for key, signature, digest in cases)

    async def all_at_the_helper() -> bool:
        return waiting_for(pid) == sent

    await eventually(all_at_the_helper, what="every record in the helper's pipe")
    assert not any(check.done() for check in pending)

    os.kill(pid, signal.SIGKILL)
    verdicts = await asyncio.wait_for(asyncio.gather(*pending), 5.0)

    assert verdicts == [True] * 20 + [False]
    await eventually(lambda: _true(not alive(pid)), what="killed helper reaped")


async def test_a_helper_that_hangs_is_replaced_and_its_checks_made_in_process(checks: SignatureChecks) -> None:
    pid = checks.helper_pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)

    verdicts = await asyncio.wait_for(
        asyncio.gather(checks.valid(KEY, SIGNATURE, DIGEST), checks.valid(OTHER_KEY, SIGNATURE, DIGEST)), 5.0
    )

    assert list(verdicts) == [True, False]  # after `silence_allowed`, in process
    await eventually(lambda: _true(not alive(pid)), what="hung helper ended")

    async def replaced() -> bool:
        await checks.valid(KEY, SIGNATURE, DIGEST)
        return checks.helper_pid not in (None, pid)

    await eventually(replaced, what="a new helper")
    assert await checks.valid(KEY, SIGNATURE, DIGEST)
    assert not await checks.valid(KEY, SIGNATURE, hashlib.sha256(b"other").digest())


async def test_not_offloaded_no_helper_ever_starts() -> None:
    checks = SignatureChecks(flush_interval=0.0, offloaded=False)
    await checks.start()

    assert await checks.valid(KEY, SIGNATURE, DIGEST)
    assert not await checks.valid(OTHER_KEY, SIGNATURE, DIGEST)
    assert checks.helper_pid is None
    await checks.close()


async def test_the_helper_ends_with_a_service_that_is_killed() -> None:
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _SERVICE_WITH_A_HELPER, stdout=asyncio.subprocess.PIPE
    )
    assert service.stdout is not None
    while not (line := await asyncio.wait_for(service.stdout.readline(), 30.0)).startswith(b"helper "):
        assert line, "the service ended before its helper started"
    helper_pid = int(line.split()[1])
    assert alive(helper_pid)

    service.kill()
    await service.wait()

    await eventually(lambda: _true(not alive(helper_pid)), what="the orphaned helper to end")


_SERVICE_WITH_A_HELPER = """
import asyncio
from mesh.signature_checks import SignatureChecks

async def serve():
    checks = SignatureChecks(flush_interval=0.0)
    await checks.start()
    print("helper", checks.helper_pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(serve())
"""


async def _true(value: bool) -> bool:
    return value

"""Passwords: the policy every account follows (users' and admins'), and argon2id hashes with
parameters from settings, computed off the event loop (the C code releases the GIL, so a process
hashes on every core).

Hashes run on a pool of one thread per core, not on asyncio's default executor: more hashes at
once than cores only makes each slower (every one walks 19 MiB or more of memory), and a burst of
sign-ins would then also delay everything else that uses the default executor. The pool measures
how long a hash takes, so that admission (mesh.admission) can bound the calls waiting for it by
a latency target instead of a guessed queue length."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_MIN = 12
PASSWORD_MAX = 128


def _common_passwords() -> frozenset[str]:
    listed = files("mesh").joinpath("common_passwords.txt").read_text()
    return frozenset(
        line.strip().casefold() for line in listed.splitlines() if line.strip() and not line.startswith("#")
    )


COMMON_PASSWORDS = _common_passwords()


def password_problem(password: str) -> str | None:
    """Why a password may not be used, or None."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"
    if password.casefold() in COMMON_PASSWORDS or len(set(password)) < 4:
        return "too common; choose a longer phrase of your own"
    return None


T = TypeVar("T")


class _Reservation:
    def __init__(self, pool: HashingPool) -> None:
        self._pool: HashingPool | None = pool

    def release(self) -> None:
        if self._pool is not None:
            self._pool._reserved -= 1
            self._pool = None


_reservation: contextvars.ContextVar[_Reservation | None] = contextvars.ContextVar("hash_reservation", default=None)


class HashingPool:
    """The threads every password hash of a process runs on, how long one has taken lately, and
    how many are waiting: hashes given to the threads and not done, and calls admitted that will
    hash and have not yet (`reserved`)."""

    # Weight of the newest hash in the moving average: about the last twenty count.
    _SMOOTHING = 0.1

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="argon2", initializer=_yielding_to_the_event_loops
        )
        self._seconds: float | None = None
        self._queued = 0
        self._reserved = 0

    @property
    def waiting(self) -> int:
        return self._queued + self._reserved

    def reserve(self) -> Callable[[], None]:
        """Counts the calling task as waiting for the threads from now until its first hash is
        given to them, or until it calls what this answers: what a call does before it hashes
        (reading an account, holding a code) is time a hash it brings is already promised."""
        reservation = _Reservation(self)
        self._reserved += 1
        token = _reservation.set(reservation)

        def release() -> None:
            _reservation.reset(token)
            reservation.release()

        return release

    @property
    def seconds_per_hash(self) -> float | None:
        """The moving average of the time one hash took on a thread; None before the first."""
        return self._seconds

    def observe(self, seconds: float) -> None:
        previous = self._seconds
        self._seconds = seconds if previous is None else previous + self._SMOOTHING * (seconds - previous)

    async def run(self, work: Callable[[], T]) -> T:
        if (reservation := _reservation.get()) is not None:
            reservation.release()  # counted as queued from here
        self._queued += 1
        try:
            result, seconds = await asyncio.get_running_loop().run_in_executor(self._executor, _timed, work)
        finally:
            self._queued -= 1
        self.observe(seconds)
        return result


def _yielding_to_the_event_loops() -> None:
    """A hashing thread runs at a lower priority (nice 10, Linux sets it per thread) than the
    event loops of this machine: under a spike of sign-ups the cores stay busy hashing, and a
    code check, a refusal for load or a page is still answered at once instead of waiting its
    turn behind hashes."""
    # Not Linux, or not allowed: hash at the same priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _timed(work: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


HASHING = HashingPool(threads=os.cpu_count() or 1)
"""One per process, shared by every hasher in it: the cores are the limit, not the callers."""


@dataclass(frozen=True)
class Verdict:
    matches: bool
    needs_rehash: bool = False
    """The hash was made with weaker parameters than today's: store a new one."""


class Passwords:
    def __init__(self, memory_kib: int, time_cost: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID
        )
        # Checked against when the email is unknown, so both answers take as long. Made here, it
        # is also the pool's first measure of a hash, before any call has waited for one.
        self._decoy, seconds = _timed(lambda: self._hasher.hash("a password nobody has"))
        if HASHING.seconds_per_hash is None:
            HASHING.observe(seconds)

    async def hash(self, password: str) -> str:
        return await HASHING.run(lambda: self._hasher.hash(password))

    async def verify(self, stored: str | None, password: str) -> Verdict:
        """Checks `password` against `stored`; with no stored hash, spends the same time and fails."""
        return await HASHING.run(lambda: self._verify(stored, password))

    def _verify(self, stored: str | None, password: str) -> Verdict:
        try:
            self._hasher.verify(stored or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(False)
        if stored is None:
            return Verdict(False)
        return Verdict(True, self._hasher.check_needs_rehash(stored))

"""Passwords: the policy every account follows (users' and admins'), and argon2id hashes with
parameters from settings, computed off the event loop (the C code releases the GIL, so a process
hashes on every core).

Hashes run on a pool of one thread per core, not on asyncio's default executor: more hashes at
once than cores only makes each slower (every one walks 19 MiB or more of memory), and a burst of
sign-ins would then also delay everything else that uses the default executor."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files

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


# One per process, shared by every hasher in it: the cores are the limit, not the callers.
_HASHING = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="argon2")


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
        # Checked against when the email is unknown, so both answers take as long.
        self._decoy = self._hasher.hash("a password nobody has")

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(_HASHING, self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> Verdict:
        """Checks `password` against `stored`; with no stored hash, spends the same time and fails."""
        return await asyncio.get_running_loop().run_in_executor(_HASHING, self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> Verdict:
        try:
            self._hasher.verify(stored or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return Verdict(False)
        if stored is None:
            return Verdict(False)
        return Verdict(True, self._hasher.check_needs_rehash(stored))

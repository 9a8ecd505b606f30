"""SQL of the `auth` schema, a slice per flow: users, registrations, verification, sessions,
recovery, and the signing keys.

Every rule that must hold under concurrency is one conditional statement, not a read followed by
a write: one account per canonical email is a partial unique index, while each pending
registration of an email is a row of its own that nothing later overwrites; a registration is
written only where the email has no account, in the same statement that looks; an attempt at a
verification code is taken before the code is compared, so parallel guesses cannot exceed the
limit; of two registrations verified at once the unique index lets one become the account; a
refresh token rotates only from ACTIVE, so of two uses at once one wins and the other is seen as
reuse.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc import models
from auth_svc.store.recovery import RecoveryStore
from auth_svc.store.registrations import RegistrationStore
from auth_svc.store.sessions import SessionStore
from auth_svc.store.users import UserStore
from auth_svc.store.verification import VerificationStore
from mesh.db import DriverPool
from mesh.outbox import Outbox
from mesh.token_keys import SigningKeyStore


@dataclass(frozen=True)
class AuthStore:
    users: UserStore
    registrations: RegistrationStore
    verification: VerificationStore
    sessions: SessionStore
    recovery: RecoveryStore
    keys: SigningKeyStore

    @classmethod
    def over(cls, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> AuthStore:
        return cls(
            UserStore(engine, driver, outbox),
            RegistrationStore(engine, driver, outbox),
            VerificationStore(engine, driver, outbox),
            SessionStore(engine, driver, outbox),
            RecoveryStore(engine, outbox),
            SigningKeyStore(engine, models.signing_keys),
        )

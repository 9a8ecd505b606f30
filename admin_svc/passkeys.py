"""Passkeys (WebAuthn, with the `webauthn` library) as an admin's second sign-in factor instead
of a TOTP code.

Registration: a signed-in admin asks for options, whose challenge admin_svc keeps in Redis for
the admin, once and for five minutes; the browser's new credential is verified against it, the
relying party id and the console's origins, and stored (audited as `CreatePasskey`). Sign-in:
after the password step, options for the MFA token name the admin's passkeys, with a challenge
kept under the token; VerifySessionMfa checks the browser's assertion against it and the stored
public key, and moves the passkey's signature counter forward in the transaction that starts
the session (a counter that does not move forward means a cloned authenticator: refused).
"""

from __future__ import annotations

import hashlib
import uuid

import structlog
import webauthn
from invitemesh.admin.v1 import admin_service_pb2 as pb
from redis.exceptions import RedisError
from webauthn.helpers import exceptions as webauthn_errors
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from admin_svc.store.passkeys import PasskeyRecord, PasskeyStore
from mesh.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unauthenticated, Unavailable
from mesh.redis import Commands, KeySpace
from mesh.timestamps import optional_timestamp, timestamp

log = structlog.get_logger("admin_svc.passkeys")
CHALLENGE_TTL_MS = 300_000
MAX_CREDENTIAL = 16 * 1024
MAX_NAME = 60
RP_NAME = "invitemesh console"
_WEBAUTHN_FAILURES = (webauthn_errors.InvalidRegistrationResponse, webauthn_errors.InvalidAuthenticationResponse,
                      webauthn_errors.InvalidJSONStructure, ValueError, KeyError, TypeError)  # fmt: skip


def passkey_message(passkey: PasskeyRecord) -> pb.Passkey:
    return pb.Passkey(
        id=str(passkey.id),
        display_name=passkey.display_name,
        create_time=timestamp(passkey.create_time),
        last_use_time=optional_timestamp(passkey.last_use_time),
    )


class Passkeys:
    def __init__(self, store: PasskeyStore, pipe: Commands, keys: KeySpace, rp_id: str, origins: list[str]) -> None:
        self.store = store
        self._pipe = pipe
        self._keys = keys
        self._rp_id = rp_id
        self._origins = origins

    async def registration_options(self, admin_id: uuid.UUID, email: str) -> str:
        existing = await self.store.of_admin(admin_id)
        options = webauthn.generate_registration_options(
            rp_id=self._rp_id,
            rp_name=RP_NAME,
            user_id=admin_id.bytes,
            user_name=email,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in existing],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.PREFERRED, user_verification=UserVerificationRequirement.REQUIRED
            ),
        )
        await self._keep(self._registration_key(admin_id), options.challenge)
        return webauthn.options_to_json(options)

    async def registered(self, admin_id: uuid.UUID, request: pb.CreatePasskeyRequest) -> tuple[bytes, bytes, int]:
        """The credential id, public key and counter of the passkey the browser made, once checked."""
        name = request.display_name.strip()
        violations = []
        if not 0 < len(request.credential_json) <= MAX_CREDENTIAL:
            violations.append(FieldViolation("credential_json", f"required, at most {MAX_CREDENTIAL} bytes"))
        if not 0 < len(name) <= MAX_NAME:
            violations.append(FieldViolation("display_name", f"1 to {MAX_NAME} characters"))
        if violations:
            raise InvalidArgument(violations)
        challenge = await self._take(self._registration_key(admin_id))
        if challenge is None:
            raise FailedPrecondition("PASSKEY_CHALLENGE_EXPIRED", "ask for new options and try again")
        try:
            verified = webauthn.verify_registration_response(
                credential=request.credential_json,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                require_user_verification=True,
            )
        except _WEBAUTHN_FAILURES as error:
            log.info("passkey registration refused", why=type(error).__name__)
            raise InvalidArgument(
                [FieldViolation("credential_json", "not a passkey made from these options")]
            ) from None
        return verified.credential_id, verified.credential_public_key, verified.sign_count

    async def sign_in_options(self, mfa_token: str, admin_id: uuid.UUID) -> str:
        own = await self.store.of_admin(admin_id)
        if not own:
            raise FailedPrecondition("PASSKEY_NONE", "this admin has no passkey: use the TOTP code")
        options = webauthn.generate_authentication_options(
            rp_id=self._rp_id,
            allow_credentials=[PublicKeyCredentialDescriptor(id=p.credential_id) for p in own],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        await self._keep(self._sign_in_key(mfa_token), options.challenge)
        return webauthn.options_to_json(options)

    async def asserted(
        self, mfa_token: str, admin_id: uuid.UUID, credential_json: str
    ) -> tuple[PasskeyRecord, int] | None:
        """The admin's passkey that signed this sign-in's challenge and its new counter, or None."""
        challenge = await self._take(self._sign_in_key(mfa_token))
        if challenge is None or len(credential_json) > MAX_CREDENTIAL:
            return None
        try:
            credential = webauthn.helpers.parse_authentication_credential_json(credential_json)
            own = {p.credential_id: p for p in await self.store.of_admin(admin_id)}
            passkey = own.get(credential.raw_id)
            if passkey is None:
                return None
            verified = webauthn.verify_authentication_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self._rp_id,
                expected_origin=self._origins,
                credential_public_key=passkey.public_key,
                credential_current_sign_count=passkey.sign_count,
                require_user_verification=True,
            )
        except _WEBAUTHN_FAILURES as error:
            log.info("passkey sign-in refused", why=type(error).__name__)
            return None
        return passkey, verified.new_sign_count

    def _registration_key(self, admin_id: uuid.UUID) -> str:
        return self._keys.tagged(str(admin_id), "passkey-registration")

    def _sign_in_key(self, mfa_token: str) -> str:
        return self._keys.key("passkey-sign-in", hashlib.sha256(mfa_token.encode()).hexdigest())

    async def _keep(self, key: str, challenge: bytes) -> None:
        try:
            await self._pipe.execute("SET", key, challenge, "PX", CHALLENGE_TTL_MS)
        except RedisError:
            raise Unavailable(
                "STAGE_TOKENS_UNAVAILABLE", "passkeys cannot be used right now; try again shortly"
            ) from None

    async def _take(self, key: str) -> bytes | None:
        try:
            challenge = await self._pipe.execute("GETDEL", key)
        except RedisError:
            raise Unavailable(
                "STAGE_TOKENS_UNAVAILABLE", "passkeys cannot be used right now; try again shortly"
            ) from None
        return challenge if isinstance(challenge, bytes) else None


def wrong_passkey() -> Unauthenticated:
    return Unauthenticated("PASSKEY_INVALID", "this passkey answer does not sign this sign-in; sign in again")

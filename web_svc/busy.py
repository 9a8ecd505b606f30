"""A form the mesh was too busy to take (`OVERLOADED`): the page is answered 503 with the mesh's
Retry-After, says so, and sends the form again by itself (static/resend.js) once that wait and as
much again at random have passed, so the people told to wait do not all come back at once.

The secrets a person typed (a password, a reset token) are never shown back in a page; to send
the form again without asking for them, they ride along sealed (AES-256-GCM under a key of
web_svc's own, bound to the browser's CSRF token, opened for two minutes). Without JavaScript the
page says the same, and the person's click on the button sends it again."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from starlette.datastructures import FormData
from starlette.requests import Request

from mesh.sealing import Sealer
from web_svc.calls import Refused
from web_svc.security import csrf_token, form_text

RESEND_FIELD = "resend"
RESEND_WITHIN = 120
"""Seconds a sealed resend opens for."""


@dataclass(frozen=True)
class Busy:
    """What a page says and carries when the mesh was too busy for its form."""

    seconds: int
    """How long the mesh asked to wait (Retry-After)."""
    sealed: str
    """The form's secrets, sealed for this browser."""

    @property
    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.seconds)}


class BusyForms:
    def __init__(self, key: bytes) -> None:
        self._sealer = Sealer(key)

    def busy(self, request: Request, refused: Refused, secrets: Mapping[str, str]) -> Busy | None:
        """For a refusal for load: the wait and the sealed `secrets` (form field → value)."""
        if not refused.overloaded:
            return None
        plain = json.dumps({"until": time.time() + RESEND_WITHIN, "fields": dict(secrets)}).encode()
        sealed = self._sealer.seal(_record(request), plain)
        return Busy(refused.retry_after or 1, base64.urlsafe_b64encode(sealed).decode())

    def field(self, request: Request, form: FormData, name: str) -> str:
        """A field as typed, or else as a sealed resend of this browser carries it."""
        if typed := form_text(form, name):
            return typed
        carried = form_text(form, RESEND_FIELD)
        if not carried:
            return ""
        try:
            opened = json.loads(self._sealer.unseal(_record(request), base64.urlsafe_b64decode(carried)))
        except (InvalidTag, ValueError, binascii.Error):
            return ""
        if opened["until"] < time.time():
            return ""
        return str(opened["fields"].get(name, ""))


def _record(request: Request) -> bytes:
    return b"busy resend\0" + csrf_token(request).encode()

"""A form the mesh was too busy for: the sealed resend opens for the same browser only, within
its two minutes, and only a refusal for load makes one."""

from __future__ import annotations

import base64
from unittest import mock

import grpc
import pytest
from starlette.datastructures import FormData
from starlette.requests import Request

from web_svc.busy import RESEND_FIELD, RESEND_WITHIN, BusyForms
from web_svc.calls import Refused

FORMS = BusyForms(b"k" * 32)
OVERLOADED = Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", "busy", retry_after=1)
SECRETS = {"password": "a long passphrase here", "token": "the reset token"}


def browser(browser_id: str) -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""})
    request.state.browser_id = browser_id
    request.state.csrf_key = b"c" * 32
    return request


def sealed_form(sealed: str, **typed: str) -> FormData:
    return FormData([(RESEND_FIELD, sealed), *typed.items()])


def test_a_refusal_for_load_seals_the_secrets_for_the_same_browser_to_send_again() -> None:
    ada = browser("ada")
    busy = FORMS.busy(ada, OVERLOADED, SECRETS)

    assert busy is not None and busy.seconds == 1 and busy.headers == {"retry-after": "1"}
    assert not any(secret.encode() in base64.urlsafe_b64decode(busy.sealed) for secret in SECRETS.values())
    form = sealed_form(busy.sealed)
    assert {name: FORMS.field(ada, form, name) for name in SECRETS} == SECRETS
    # What the person types again wins.
    assert FORMS.field(ada, sealed_form(busy.sealed, password="typed anew"), "password") == "typed anew"


def test_a_sealed_resend_opens_for_no_other_browser_and_not_once_tampered_with() -> None:
    busy = FORMS.busy(browser("ada"), OVERLOADED, SECRETS)
    assert busy is not None

    assert FORMS.field(browser("eve"), sealed_form(busy.sealed), "password") == ""
    tampered = base64.urlsafe_b64encode(base64.urlsafe_b64decode(busy.sealed)[:-1] + b"x").decode()
    assert FORMS.field(browser("ada"), sealed_form(tampered), "password") == ""
    assert FORMS.field(browser("ada"), sealed_form("not base64 at all!"), "password") == ""


def test_a_sealed_resend_opens_for_two_minutes() -> None:
    ada = browser("ada")
    with mock.patch("web_svc.busy.time.time", return_value=1_000_000.0):
        busy = FORMS.busy(ada, OVERLOADED, SECRETS)
    assert busy is not None

    with mock.patch("web_svc.busy.time.time", return_value=1_000_000.0 + RESEND_WITHIN - 1):
        assert FORMS.field(ada, sealed_form(busy.sealed), "password") == SECRETS["password"]
    with mock.patch("web_svc.busy.time.time", return_value=1_000_000.0 + RESEND_WITHIN + 1):
        assert FORMS.field(ada, sealed_form(busy.sealed), "password") == ""


@pytest.mark.parametrize(
    "refused",
    [
        Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", "slow down", retry_after=30),
        Refused(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "no"),
    ],
)
def test_only_a_refusal_for_load_is_sent_again(refused: Refused) -> None:
    assert FORMS.busy(browser("ada"), refused, SECRETS) is None


def test_a_page_answers_a_refusal_for_load_503_a_spent_budget_429() -> None:
    assert OVERLOADED.http_status(400) == 503
    assert Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", "").http_status(400) == 429
    assert Refused(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "").http_status(400) == 400

"""auth_svc's pure rules: the password policy, verification codes and the sign-in slowdown."""

from __future__ import annotations

import pytest

from auth_svc.domain import (
    code_digest,
    is_verification_code,
    new_verification_code,
    password_problem,
    same_digest,
    sign_in_delay,
)


@pytest.mark.parametrize(
    "password",
    ["short", "x" * 129, "password1234", "PASSWORD1234", "123456789012", "aaaaaaaaaaaaaaaa", "abababababab"],
)
def test_weak_passwords_are_refused(password: str) -> None:
    assert password_problem(password) is not None


@pytest.mark.parametrize("password", ["a long passphrase of my own", "Ünïcödé pässwörd", "x" * 100 + "yz12"])
def test_own_passphrases_are_accepted(password: str) -> None:
    assert password_problem(password) is None


def test_verification_codes_are_six_digits_and_vary() -> None:
    codes = {new_verification_code() for _ in range(200)}

    assert all(is_verification_code(code) for code in codes)
    assert len(codes) > 190


@pytest.mark.parametrize("typed", ["12345", "1234567", "12345a", "١٢٣٤٥٦", ""])
def test_anything_but_six_ascii_digits_is_no_code(typed: str) -> None:
    assert not is_verification_code(typed)


def test_a_code_digest_is_bound_to_its_key_and_its_user() -> None:
    user, other = "ada@example.com", "bob@example.com"
    digest = code_digest(b"k" * 32, user, "123456")

    assert same_digest(digest, code_digest(b"k" * 32, user, "123456"))
    assert not same_digest(digest, code_digest(b"k" * 32, other, "123456"))
    assert not same_digest(digest, code_digest(b"j" * 32, user, "123456"))
    assert not same_digest(digest, code_digest(b"k" * 32, user, "123457"))


def test_sign_ins_slow_down_after_a_few_failures_up_to_a_cap() -> None:
    delays = [sign_in_delay(failures) for failures in range(12)]

    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:7] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 4.0 and delays == sorted(delays)

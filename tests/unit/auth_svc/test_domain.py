"""auth_svc's pure rules: verification codes."""

from __future__ import annotations

import pytest

from auth_svc.domain import (
    code_digest,
    is_verification_code,
    new_verification_code,
    same_digest,
)


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

"""The password policy every account follows."""

from __future__ import annotations

import pytest

from mesh.passwords import password_problem


@pytest.mark.parametrize(
    "password",
    ["short", "x" * 129, "password1234", "PASSWORD1234", "123456789012", "aaaaaaaaaaaaaaaa", "abababababab"],
)
def test_weak_passwords_are_refused(password: str) -> None:
    assert password_problem(password) is not None


@pytest.mark.parametrize("password", ["a long passphrase of my own", "Ünïcödé pässwörd", "x" * 100 + "yz12"])
def test_own_passphrases_are_accepted(password: str) -> None:
    assert password_problem(password) is None

"""Opaque tokens."""

from __future__ import annotations

from auth_svc.tokens import new_opaque_token, token_digest


def test_opaque_tokens_are_long_random_and_kept_only_as_digests() -> None:
    tokens = {new_opaque_token() for _ in range(100)}

    assert len(tokens) == 100 and all(len(token) >= 43 for token in tokens)
    token = tokens.pop()
    assert len(token_digest(token)) == 32 and token.encode() not in token_digest(token)

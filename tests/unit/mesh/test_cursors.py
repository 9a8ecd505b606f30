"""Page tokens carry a position back unchanged and refuse any edit or another query."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.cursors import InvalidPageToken, PageTokens

TOKENS = PageTokens(b"k" * 32)
POSITION = ["2026-11-23T10:00:00+00:00", "0b7d5a8e-4f5c-4d8e-9a57-3e2f1c0d9b6a"]


def test_a_token_gives_back_its_position_for_its_query_only() -> None:
    token = TOKENS.issue(POSITION, "status=3")

    assert TOKENS.position(token, "status=3") == POSITION
    with pytest.raises(InvalidPageToken):
        TOKENS.position(token, "status=4")
    with pytest.raises(InvalidPageToken):
        PageTokens(b"x" * 32).position(token, "status=3")


@given(
    position=st.integers(min_value=0),
    replacement=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
)
def test_any_edited_character_is_refused(position: int, replacement: str) -> None:
    token = TOKENS.issue(POSITION, "")
    index = position % len(token)
    edited = token[:index] + replacement + token[index + 1 :]
    if edited == token:
        return
    with pytest.raises(InvalidPageToken):
        TOKENS.position(edited, "")


@pytest.mark.parametrize("position", [["a"], ["ab"], ["abc"]])
def test_every_edit_of_the_last_character_is_refused(position: list[str]) -> None:
    token = TOKENS.issue(position, "")  # the three lengths cover every count of unused trailing bits
    for replacement in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        if replacement != token[-1]:
            with pytest.raises(InvalidPageToken):
                TOKENS.position(token[:-1] + replacement, "")

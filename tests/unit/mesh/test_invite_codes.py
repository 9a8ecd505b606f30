"""The check symbol catches every single substitution and every adjacent swap, proven
exhaustively over the alphabet; normalisation is checked by properties."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.invite_codes import (
    ALPHABET,
    OPERATION,
    InvalidCode,
    check_symbol,
    display,
    generate,
    normalize,
)

SYMBOLS = range(32)
codes = st.text(alphabet=ALPHABET, min_size=8, max_size=8).map(lambda body: body + check_symbol(body))


def test_alphabet_has_32_distinct_symbols_without_0_o_1_i() -> None:
    assert len(set(ALPHABET)) == 32
    assert not set(ALPHABET) & set("0O1I")


def test_operation_is_a_quasigroup_so_every_substitution_changes_the_fold() -> None:
    for row in SYMBOLS:
        assert sorted(OPERATION[row]) == list(SYMBOLS)
    for column in SYMBOLS:
        assert sorted(OPERATION[row][column] for row in SYMBOLS) == list(SYMBOLS)


def test_operation_is_totally_anti_symmetric_so_every_adjacent_swap_changes_the_fold() -> None:
    for interim, x, y in itertools.product(SYMBOLS, SYMBOLS, SYMBOLS):
        if x != y:
            assert OPERATION[OPERATION[interim][x]][y] != OPERATION[OPERATION[interim][y]][x]


@given(codes)
def test_every_single_substitution_is_refused(code: str) -> None:
    for position, replacement in itertools.product(range(len(code)), ALPHABET):
        if replacement != code[position]:
            typo = code[:position] + replacement + code[position + 1 :]
            with pytest.raises(InvalidCode) as raised:
                normalize(typo)
            assert raised.value.reason == "INVITE_CODE_TYPO"


@given(codes)
def test_every_adjacent_swap_is_refused(code: str) -> None:
    for position in range(len(code) - 1):
        if code[position] != code[position + 1]:
            swapped = code[:position] + code[position + 1] + code[position] + code[position + 2 :]
            with pytest.raises(InvalidCode) as raised:
                normalize(swapped)
            assert raised.value.reason == "INVITE_CODE_TYPO"


@given(codes, st.data())
def test_case_spaces_and_dashes_do_not_matter(code: str, data: st.DataObject) -> None:
    typed = "".join(
        data.draw(st.sampled_from([symbol, symbol.lower()])) + data.draw(st.sampled_from(["", " ", "-", "  "]))
        for symbol in code
    )

    assert normalize(typed) == code
    assert normalize(display(code)) == code


def test_generated_codes_are_valid_and_distinct() -> None:
    generated = {generate() for _ in range(2000)}

    assert len(generated) == 2000
    assert all(normalize(code) == code for code in generated)


@pytest.mark.parametrize("length", [4, 8, 12])
def test_length_is_configurable(length: int) -> None:
    code = generate(length)

    assert len(code) == length + 1
    assert normalize(code, length) == code
    with pytest.raises(InvalidCode, match="symbols"):
        normalize(code, length + 1)


def test_display_groups_by_four_then_the_check_symbol() -> None:
    assert display("ABCDEFGHJ") == "ABCD-EFGH-J"
    assert display("ABCDEFGHJKLMN") == "ABCD-EFGH-JKLM-N"


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("ABCD-EFGH-0", "INVITE_CODE_AMBIGUOUS_SYMBOL"),
        ("OBCD-EFGH-J", "INVITE_CODE_AMBIGUOUS_SYMBOL"),
        ("1BCD-EFGH-J", "INVITE_CODE_AMBIGUOUS_SYMBOL"),
        ("IBCD-EFGH-J", "INVITE_CODE_AMBIGUOUS_SYMBOL"),
        ("ABCD-EFGH-!", "INVITE_CODE_MALFORMED"),
        ("ABCD-EFGH", "INVITE_CODE_MALFORMED"),
        ("", "INVITE_CODE_MALFORMED"),
    ],
)
def test_impossible_input_gets_a_reason(typed: str, reason: str) -> None:
    with pytest.raises(InvalidCode) as raised:
        normalize(typed)

    assert raised.value.reason == reason


def test_ambiguous_symbols_get_a_hint() -> None:
    with pytest.raises(InvalidCode) as raised:
        normalize("ABCD-EFGH-0")

    assert "never contain 0" in raised.value.description

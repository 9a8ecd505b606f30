import pytest

from mesh.invite_codes import display, generate
from web_svc.domain import (
    CODE_MESSAGES,
    UNEXPECTED,
    code_problem,
    displayed_code,
    ether,
    form_errors,
    in_one_line,
    message_for,
    placed,
    share_link,
    short_address,
    verification_code_problem,
)


def test_a_typed_code_is_judged_without_a_lookup() -> None:
    code = display(generate())
    typo = code[:-1] + ("A" if code[-1] != "A" else "B")

    assert code_problem(code) is None
    assert code_problem(code.lower().replace("-", " ")) is None
    assert code_problem(typo) == CODE_MESSAGES["INVITE_CODE_TYPO"]
    assert code_problem("ABCD-EFG0-J") == CODE_MESSAGES["INVITE_CODE_AMBIGUOUS_SYMBOL"]
    assert code_problem("ABC") == CODE_MESSAGES["INVITE_CODE_MALFORMED"]


def test_a_code_from_a_link_is_shown_as_people_read_it() -> None:
    code = display(generate())

    assert displayed_code(code.lower().replace("-", "")) == code
    assert displayed_code("  not a code  ") == "not a code"
    assert len(displayed_code("X" * 500)) == 40


def test_field_violations_land_beside_their_form_fields_as_sentences() -> None:
    errors = form_errors({"invite_code": "unknown code", "new_password": "too short.", "email": "not an email"})

    assert errors == {"code": "Unknown code.", "password": "Too short.", "email": "Not an email."}


def test_every_reason_has_words_and_an_unknown_one_a_general_apology() -> None:
    assert message_for("INVALID_CREDENTIALS") == "The email or the password is not right."
    assert message_for("SOMETHING_NEW") == UNEXPECTED


def test_the_verification_code_has_six_digits() -> None:
    assert verification_code_problem(" 123456 ") is None
    assert verification_code_problem("12345") is not None
    assert verification_code_problem("12345a") is not None


def test_a_share_link_opens_the_reserve_page_with_the_code() -> None:
    assert share_link("https://invites.example.com/", "ABCD-EFGH-J") == "https://invites.example.com/?code=ABCD-EFGH-J"


def test_a_refusal_goes_beside_its_fields_or_else_once_for_the_whole() -> None:
    assert placed({"email": "not an email"}, "INVALID_ARGUMENT") == ({"email": "Not an email."}, None)
    assert placed({}, "INVALID_CREDENTIALS") == ({}, "The email or the password is not right.")
    assert in_one_line({"a": "one", "b": "two."}, "INVALID_ARGUMENT") == "One. Two."
    assert in_one_line({}, "RATE_LIMITED") == message_for("RATE_LIMITED")


@pytest.mark.parametrize(
    ("wei", "shown"),
    [
        (0, "0"),
        (25 * 10**17, "2.5"),
        (10**18, "1"),
        (1234567 * 10**18 + 10**12, "1,234,567.000001"),
        (10**12 - 1, "less than 0.000001"),
        (10**18 + 10**11, "1"),
    ],
)
def test_wei_is_shown_as_ether_to_six_decimals(wei: int, shown: str) -> None:
    assert ether(wei) == shown


def test_an_address_is_shortened_to_its_ends() -> None:
    assert short_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed") == "0x5aAe…eAed"

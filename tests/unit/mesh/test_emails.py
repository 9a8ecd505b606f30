import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.emails import InvalidEmail, canonical_email


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("Ada@Example.com", "ada@example.com"),
        ("ada.love+launch@gmail.com", "adalove@gmail.com"),
        ("Ada.Love@GoogleMail.com", "adalove@gmail.com"),
        ("ada.love+x@example.com", "ada.love@example.com"),
        ("Ada+One+Two@Example.com", "ada@example.com"),
        ("  ada@example.com ", "ada@example.com"),
    ],
)
def test_canonical_forms(typed: str, canonical: str) -> None:
    assert canonical_email(typed) == canonical


@pytest.mark.parametrize(
    "typed", ["", "ada", "@example.com", "ada@", "ada@localhost", "a da@example.com", "+x@gmail.com"]
)
def test_not_emails_are_refused(typed: str) -> None:
    with pytest.raises(InvalidEmail):
        canonical_email(typed)


def test_tags_and_the_provider_list_are_configurable() -> None:
    assert canonical_email("a.b+c@corp.example", dotless_providers={"corp.example": "corp.example"}) == (
        "ab@corp.example"
    )
    assert canonical_email("a.b+c@gmail.com", dotless_providers={}) == "a.b@gmail.com"
    assert canonical_email("a.b+c@example.com", strip_tags=False) == "a.b+c@example.com"
    assert canonical_email("+x@example.com") == "+x@example.com"
    # Gmail ignores tags whatever the setting says.
    assert canonical_email("a.b+c@gmail.com", strip_tags=False) == "ab@gmail.com"


@given(st.emails())
def test_canonical_form_is_stable(address: str) -> None:
    once = canonical_email(address)
    assert canonical_email(once) == once

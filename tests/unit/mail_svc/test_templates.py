"""Templates: both parts rendered, HTML escaped, every variable checked, secrets masked in the
log copy, and a Message-ID that leads back to the email."""

from __future__ import annotations

import uuid
from email import message_from_bytes
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_svc.templates import CATALOGUE, BadVariables, Renderer, Template, email_id_of, message_id, mime_message

RENDERER = Renderer()
CODE_CHARS = st.text("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ-", min_size=4, max_size=32)


@given(code=CODE_CHARS)
def test_the_verification_code_is_in_the_message_and_never_in_the_log_copy(code: str) -> None:
    rendered = RENDERER.render(Template.VERIFICATION, {"code": code})

    assert code in rendered.text and code in rendered.html
    assert code not in rendered.masked_text


@given(codes=st.lists(CODE_CHARS, min_size=1, max_size=5, unique=True))
def test_invite_codes_are_masked_one_by_one(codes: list[str]) -> None:
    rendered = RENDERER.render(Template.INVITE_CODES, {"codes": "\n".join(codes)})

    assert all(code in rendered.text for code in codes)
    assert not any(code in rendered.masked_text for code in codes)
    assert rendered.masked_text.count("••••••") == len(codes)


def test_html_is_escaped_and_text_is_not() -> None:
    rendered = RENDERER.render(
        Template.DUPLICATE_REGISTRATION_NOTICE, {"sign_in_url": "https://app.example/in?a=1&b=<2>"}
    )

    assert 'href="https://app.example/in?a=1&amp;b=&lt;2&gt;"' in rendered.html
    assert "https://app.example/in?a=1&b=<2>" in rendered.text


@pytest.mark.parametrize("template", list(Template))
def test_every_template_renders_with_its_required_variables(template: Template) -> None:
    values = {
        "code": "123456",
        "reset_url": "https://app.example/r",
        "codes": "ABCD-EFGH-J",
        "subject": "A word from us",
        "text": "Hello.",
        "status_url": "https://app.example/waitlist/me#token=abc",
        "reserve_url": "https://app.example/",
    }
    rendered = RENDERER.render(template, {name: values[name] for name in CATALOGUE[template].required})

    assert rendered.subject and rendered.text.strip() and "<html" in rendered.html


@pytest.mark.parametrize(
    ("variables", "fields"),
    [
        ({}, ["variables[reset_url]"]),
        ({"reset_url": "ftp://x.example"}, ["variables[reset_url]"]),
        ({"reset_url": "https://x.example", "expires_in_minutes": "soon"}, ["variables[expires_in_minutes]"]),
        ({"reset_url": "https://x.example", "name": "Ada"}, ["variables[name]"]),
    ],
)
def test_bad_variables_are_named(variables: dict[str, str], fields: list[str]) -> None:
    with pytest.raises(BadVariables) as bad:
        RENDERER.render(Template.PASSWORD_RESET, variables)

    assert [violation.field for violation in bad.value.violations] == fields


def test_a_free_form_email_keeps_its_subject_and_text_and_escapes_them_in_html() -> None:
    text = "Dear <Ada>,\n\nwe launch {tomorrow} & you are in.\n"

    rendered = RENDERER.render(Template.PLAIN_TEXT, {"subject": "Launch {day} <news>", "text": text})

    assert rendered.subject == "Launch {day} <news>"
    assert rendered.text == text + "\n" and rendered.masked_text == rendered.text
    assert "Dear &lt;Ada&gt;" in rendered.html and "&amp; you are in" in rendered.html


@pytest.mark.parametrize(
    ("variables", "fields"),
    [
        ({"subject": "two\nlines", "text": "x"}, ["variables[subject]"]),
        ({"subject": "s" * 201, "text": "x"}, ["variables[subject]"]),
        ({"subject": "fine", "text": "x" * 20001}, ["variables[text]"]),
        ({"subject": "fine", "text": "   "}, ["variables[text]"]),
    ],
)
def test_a_free_form_email_needs_a_one_line_subject_and_a_body_of_bounded_size(
    variables: dict[str, str], fields: list[str]
) -> None:
    with pytest.raises(BadVariables) as bad:
        RENDERER.render(Template.PLAIN_TEXT, variables)

    assert [violation.field for violation in bad.value.violations] == fields


def test_the_message_has_both_parts_and_a_message_id_that_names_the_email() -> None:
    email_id = uuid.uuid4()
    rendered = RENDERER.render(Template.VERIFICATION, {"code": "123456"})

    message = message_from_bytes(
        mime_message(email_id, "Mesh <no-reply@mesh.example>", "a@b.example", rendered), policy=default
    )

    assert message["Message-ID"] == message_id(email_id, "Mesh <no-reply@mesh.example>") == f"<{email_id}@mesh.example>"
    assert email_id_of(message["Message-ID"]) == email_id
    assert email_id_of("<not-ours@elsewhere>") is None
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_a_waitlist_link_and_an_invitation_keep_their_secrets_out_of_the_log() -> None:
    link = RENDERER.render(Template.WAITLIST_LINK, {"status_url": "https://app.example/waitlist/me#token=s3cr3t"})
    invitation = RENDERER.render(
        Template.WAITLIST_INVITATION, {"code": "ABCD-EFGH-J", "reserve_url": "https://app.example/"}
    )

    assert "#token=s3cr3t" in link.text and 'href="https://app.example/waitlist/me#token=s3cr3t"' in link.html
    assert "s3cr3t" not in link.masked_text
    assert "ABCD-EFGH-J" in invitation.text and "ABCD-EFGH-J" not in invitation.masked_text
    assert "https://app.example/" in invitation.masked_text

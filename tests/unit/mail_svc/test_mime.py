"""The hand-written MIME message reads back, with Python's own parser, as the email it should be:
headers (RFC 2047 where not ASCII), two UTF-8 parts with their exact text, CRLF lines of legal length."""

from __future__ import annotations

from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mail_svc.mime import multipart_alternative

FIELDS = {
    "sender": "Invitemesh <no-reply@mesh.example>",
    "recipient": "ada@example.com",
    "subject": "Your code",
    "message_id": "<1@mesh.example>",
    "text": "line one\nline two\n",
    "html": "<p>hello</p>\n",
}
PRINTABLE = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])


def _parsed(raw: bytes) -> EmailMessage:
    return message_from_bytes(raw, policy=default)


def test_headers_and_parts_read_back() -> None:
    message = _parsed(multipart_alternative(**FIELDS))

    assert (message["From"], message["To"], message["Subject"], message["Message-ID"]) == (
        "Invitemesh <no-reply@mesh.example>",
        "ada@example.com",
        "Your code",
        "<1@mesh.example>",
    )
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert (plain.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert plain.get_content() == "line one\r\nline two\r\n"
    assert message["Date"].datetime.tzinfo is not None


@given(
    text=st.text(st.characters(exclude_characters="\r", exclude_categories=["Cs"]), min_size=1, max_size=3000),
    subject=st.text(PRINTABLE, min_size=1, max_size=200).map(str.strip).filter(bool),
    name=st.text(PRINTABLE, min_size=1, max_size=40).map(str.strip).filter(lambda n: n and not set(n) & set('"\\')),
)
@example(text="x", subject="Ihr Bestätigungscode für invitemesh — bitte bald eingeben, danke schön! " * 3, name="Zoë")
def test_any_text_subject_and_display_name_survive(text: str, subject: str, name: str) -> None:
    raw = multipart_alternative(f'"{name}" <a@mesh.example>', "b@example.com", subject, "<2@x>", text, "<p/>")
    message = _parsed(raw)

    plain = next(iter(message.iter_parts()))
    assert plain.get_content().replace("\r\n", "\n") == text
    assert str(message["Subject"]) == subject
    assert message["From"].addresses[0].display_name == name
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("field", ["sender", "subject", "recipient", "message_id"])
def test_a_line_break_cannot_smuggle_a_header(field: str) -> None:
    with pytest.raises(ValueError, match="line break"):
        multipart_alternative(**(FIELDS | {field: "x\r\nBcc: victim@example.com"}))

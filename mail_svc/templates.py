"""Emails from templates: Jinja2 with HTML autoescaped and undefined variables an error, a
plain-text and an HTML part, and a masked copy of the text for the email log (the template
rendered again with its secret variables replaced, so no pattern has to guess what a secret is).
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from urllib.parse import urlsplit

import jinja2

from mail_svc.mime import multipart_alternative
from mesh.errors import FieldViolation

MASK = "•" * 6
MAX_VALUE = 2048
MAX_TEXT = 20000
"""A free-form email's body."""
MAX_SUBJECT = 200
MAX_LISTED = 100
_MINUTES = re.compile(r"^[1-9][0-9]{0,4}$")
_CODE = re.compile(r"^[0-9A-Za-z-]{4,32}$")


class Template(enum.IntEnum):
    VERIFICATION = 1
    DUPLICATE_REGISTRATION_NOTICE = 2
    PASSWORD_RESET = 3
    INVITE_CODES = 4
    PLAIN_TEXT = 5
    WAITLIST_LINK = 6
    WAITLIST_INVITATION = 7


@dataclass(frozen=True)
class Spec:
    stem: str
    subject: str
    """The subject line: `{product}` is filled in, `{subject}` is the variable of that name."""
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    secret: frozenset[str] = frozenset()
    """Masked in the log."""
    listed: frozenset[str] = field(default_factory=frozenset)
    """One item per line (or comma) in the variable's value."""


CATALOGUE: dict[Template, Spec] = {
    Template.VERIFICATION: Spec(
        "verification",
        "Your {product} verification code",
        required=frozenset({"code"}),
        optional=frozenset({"expires_in_minutes"}),
        secret=frozenset({"code"}),
    ),
    Template.DUPLICATE_REGISTRATION_NOTICE: Spec(
        "duplicate_registration_notice",
        "Someone tried to sign up for {product} with your email",
        optional=frozenset({"sign_in_url", "reset_url"}),
    ),
    Template.PASSWORD_RESET: Spec(
        "password_reset",
        "Reset your {product} password",
        required=frozenset({"reset_url"}),
        optional=frozenset({"expires_in_minutes"}),
        secret=frozenset({"reset_url"}),
    ),
    Template.INVITE_CODES: Spec(
        "invite_codes",
        "Your {product} invite codes",
        required=frozenset({"codes"}),
        optional=frozenset({"share_url"}),
        secret=frozenset({"codes"}),
        listed=frozenset({"codes"}),
    ),
    Template.PLAIN_TEXT: Spec("plain_text", "{subject}", required=frozenset({"subject", "text"})),
    Template.WAITLIST_LINK: Spec(
        "waitlist_link",
        "Your place on the {product} waitlist",
        required=frozenset({"status_url"}),
        secret=frozenset({"status_url"}),
    ),
    Template.WAITLIST_INVITATION: Spec(
        "waitlist_invitation",
        "Your {product} invite is here",
        required=frozenset({"code", "reserve_url"}),
        secret=frozenset({"code"}),
    ),
}


class BadVariables(ValueError):
    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = violations


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    masked_text: str


class Renderer:
    def __init__(self, product: str = "invitemesh") -> None:
        self._product = product
        self._environment = jinja2.Environment(
            loader=jinja2.PackageLoader("mail_svc", "templates"),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template: Template, variables: Mapping[str, str]) -> Rendered:
        """Raises `BadVariables` naming each variable that is unknown, missing or malformed."""
        spec = CATALOGUE[template]
        values = _checked(spec, variables)
        subject = spec.subject.format(product=self._product, subject=values.get("subject", ""))
        context = {name: None for name in spec.optional} | values | {"product": self._product, "subject": subject}
        masked = context | {name: _masked(values[name], name in spec.listed) for name in spec.secret if name in values}
        text = self._environment.get_template(f"{spec.stem}.txt.j2")
        html = self._environment.get_template(f"{spec.stem}.html.j2")
        return Rendered(subject, text.render(context), html.render(context), text.render(masked))


def _checked(spec: Spec, variables: Mapping[str, str]) -> dict[str, str | list[str]]:
    violations = [
        FieldViolation(f"variables[{name}]", "not a variable of this template")
        for name in sorted(set(variables) - spec.required - spec.optional)
    ]
    violations += [FieldViolation(f"variables[{name}]", "required") for name in sorted(spec.required - set(variables))]
    values: dict[str, str | list[str]] = {}
    for name in sorted((spec.required | spec.optional) & set(variables)):
        value = variables[name]
        problem = _problem(name, value)
        if problem is None and name in spec.listed:
            items = [item.strip() for item in re.split(r"[\n,]", value) if item.strip()]
            problem = _listed_problem(items)
            values[name] = items
        else:
            values[name] = value
        if problem:
            violations.append(FieldViolation(f"variables[{name}]", problem))
    if violations:
        raise BadVariables(violations)
    return values


def _problem(name: str, value: str) -> str | None:
    if name == "text":
        return None if value.strip() and len(value) <= MAX_TEXT else f"1 to {MAX_TEXT} characters"
    if name == "subject":
        one_line = value.strip() and len(value) <= MAX_SUBJECT and not any(c in value for c in "\r\n")
        return None if one_line else f"one line of 1 to {MAX_SUBJECT} characters"
    if not value.strip() or len(value) > MAX_VALUE:
        return f"1 to {MAX_VALUE} characters"
    if name.endswith("_url"):
        parts = urlsplit(value)
        return None if parts.scheme in ("https", "http") and parts.netloc else "an http or https URL"
    if name == "expires_in_minutes":
        return None if _MINUTES.match(value) else "a whole number of minutes"
    if name == "code":
        return None if _CODE.match(value) else "4 to 32 letters, digits or dashes"
    return None


def _listed_problem(items: list[str]) -> str | None:
    if not 0 < len(items) <= MAX_LISTED:
        return f"1 to {MAX_LISTED} items"
    return None if all(_CODE.match(item) for item in items) else "items of 4 to 32 letters, digits or dashes"


def _masked(value: str | list[str], listed: bool) -> str | list[str]:
    return [MASK for _ in value] if listed else MASK


def message_id(email_id: uuid.UUID, sender: str) -> str:
    """`<email id@sender's domain>`: derived from the email, so every try of it carries the same one."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "invitemesh.localhost"
    return f"<{email_id}@{domain}>"


def email_id_of(message_id: str) -> uuid.UUID | None:
    local = message_id.strip().removeprefix("<").partition("@")[0]
    try:
        return uuid.UUID(local)
    except ValueError:
        return None


def mime_message(email_id: uuid.UUID, sender: str, recipient: str, rendered: Rendered) -> bytes:
    return multipart_alternative(
        sender, recipient, rendered.subject, message_id(email_id, sender), rendered.text, rendered.html
    )

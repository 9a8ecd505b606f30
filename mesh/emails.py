"""The canonical form of an email address: the identity one person may register once with.

Lower-cased, and a `+tag` removed from the local part for every domain (`MESH_EMAIL_STRIP_TAGS`,
on by default): nearly every provider delivers `ada+x@` to `ada@`, so tags would give one mailbox
as many accounts as it likes. Dots are removed only for providers that ignore them (Gmail), whose
alias domains also fold into one, so `Ada.Love+x@GoogleMail.com` and `adalove@gmail.com` are the
same person. Changing the rules does not change identities already stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from email_validator import EmailNotValidError, validate_email

from mesh.errors import FieldViolation

MAX_ADDRESS = 320

DOTLESS_PROVIDERS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


class InvalidEmail(ValueError):
    pass


def canonical_email(
    address: str, strip_tags: bool = True, dotless_providers: Mapping[str, str] = DOTLESS_PROVIDERS
) -> str:
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not local or not domain or "." not in domain or any(c.isspace() for c in local + domain):
        raise InvalidEmail("not an email address")
    if domain in dotless_providers:
        local = local.partition("+")[0].replace(".", "")
        domain = dotless_providers[domain]
    elif strip_tags and (untagged := local.partition("+")[0]):
        # Only a tag on something: a local part that starts with "+" is a name of its own.
        local = untagged
    if not local:
        raise InvalidEmail("not an email address")
    return f"{local}@{domain}"


def email_domain(canonical: str) -> str:
    return canonical.rpartition("@")[2]


def checked_address(field: str, value: str, violations: list[FieldViolation]) -> str | None:
    """The address in ASCII (its domain in IDNA form, so no relay has to support SMTPUTF8), or
    None with a violation of `field` added. Syntax only: no DNS lookup on a request path."""
    if len(value) > MAX_ADDRESS:
        violations.append(FieldViolation(field, f"at most {MAX_ADDRESS} characters"))
        return None
    try:
        validated = validate_email(value, check_deliverability=False, allow_smtputf8=False)
        return str(validated.ascii_email or validated.normalized)
    except EmailNotValidError as invalid:
        violations.append(FieldViolation(field, f"not an email address: {invalid}"))
        return None

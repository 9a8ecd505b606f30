"""The canonical form of an email address: the identity one person may register once with.

Lower-cased; for providers that ignore dots and `+tags` in the local part (configurable), both
are removed and the provider's alias domains fold into one, so `Ada.Love+x@GoogleMail.com` and
`adalove@gmail.com` are the same person.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from mesh.errors import FieldViolation

MAX_ADDRESS = 320

DOTLESS_PROVIDERS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}


class InvalidEmail(ValueError):
    pass


def canonical_email(address: str, dotless_providers: dict[str, str] | None = None) -> str:
    providers = DOTLESS_PROVIDERS if dotless_providers is None else dotless_providers
    local, at, domain = address.strip().lower().rpartition("@")
    if not at or not local or not domain or "." not in domain or any(c.isspace() for c in local + domain):
        raise InvalidEmail("not an email address")
    if domain in providers:
        local = local.partition("+")[0].replace(".", "")
        domain = providers[domain]
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

"""The canonical form of an email address: the identity one person may register once with.

Lower-cased; for providers that ignore dots and `+tags` in the local part (configurable), both
are removed and the provider's alias domains fold into one, so `Ada.Love+x@GoogleMail.com` and
`adalove@gmail.com` are the same person.
"""

from __future__ import annotations

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

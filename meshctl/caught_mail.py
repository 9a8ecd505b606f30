"""The messages the dev SMTP sink caught: one JSON file each under the state dir, which
`meshctl mail list` reads (without the sink's server, which a deployment's image lacks)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StoredMail:
    id: str
    received_at: float
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str
    raw: str


def keep_mail(mail_dir: Path, mail: StoredMail) -> None:
    # Written then renamed, so a reader never sees half a message.
    partial = mail_dir / f".{mail.id}.tmp"
    partial.write_text(json.dumps(asdict(mail)))
    partial.rename(mail_dir / f"{int(mail.received_at * 1e6)}-{mail.id}.json")


def read_mail(mail_dir: Path, to: str | None = None) -> list[StoredMail]:
    """Stored messages, oldest first, optionally only those to one recipient."""
    found: list[StoredMail] = []
    for path in sorted(mail_dir.glob("*.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        mail = StoredMail(**data)
        if to is None or to.lower() in (r.lower() for r in mail.rcpt_tos):
            found.append(mail)
    return found

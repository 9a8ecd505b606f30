"""The dev SMTP sink: an aiosmtpd server that accepts every message and keeps it as a JSON
file under the state dir, where `meshctl mail list` reads it."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
import uuid
from dataclasses import asdict, dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass(frozen=True)
class StoredMail:
    id: str
    received_at: float
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    text: str
    raw: str


class MailDirHandler:
    def __init__(self, mail_dir: Path) -> None:
        self.mail_dir = mail_dir
        mail_dir.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=default_policy)
        body = message.get_body(preferencelist=("plain", "html")) if message.is_multipart() else message
        mail = StoredMail(
            id=uuid.uuid4().hex,
            received_at=time.time(),
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            subject=str(message.get("Subject", "")),
            text=body.get_content() if body is not None else "",
            raw=raw.decode("utf-8", "replace"),
        )
        # Written then renamed, so a reader never sees half a message.
        partial = self.mail_dir / f".{mail.id}.tmp"
        partial.write_text(json.dumps(asdict(mail)))
        partial.rename(self.mail_dir / f"{int(mail.received_at * 1e6)}-{mail.id}.json")
        return "250 Message accepted for delivery"


def read_mail(mail_dir: Path, to: str | None = None) -> list[StoredMail]:
    """Stored messages, oldest first, optionally only those to one recipient."""
    found: list[StoredMail] = []
    for path in sorted(mail_dir.glob("*.json")):
        data: dict[str, Any] = json.loads(path.read_text())
        mail = StoredMail(**data)
        if to is None or to.lower() in (r.lower() for r in mail.rcpt_tos):
            found.append(mail)
    return found


def start_sink(mail_dir: Path, host: str, port: int) -> Controller:
    controller = Controller(MailDirHandler(mail_dir), hostname=host, port=port, decode_data=False)
    controller.start()
    return controller


async def _serve(mail_dir: Path, host: str, port: int) -> None:
    controller = start_sink(mail_dir, host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="invitemesh dev SMTP sink")
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(_serve(args.dir, args.host, args.port))


if __name__ == "__main__":
    main()

"""The dev SMTP sink: an aiosmtpd server that accepts every message and keeps it as a JSON
file under the state dir (meshctl.caught_mail), where `meshctl mail list` reads it."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import uuid
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from meshctl.caught_mail import StoredMail, keep_mail


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
        keep_mail(self.mail_dir, mail)
        return "250 Message accepted for delivery"


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

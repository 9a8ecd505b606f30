"""`python -m mail_svc.worker`: a process that only sends, to run senders apart from the service
(MESH_MAIL_SENDERS of them). SIGTERM or SIGINT: in-flight sends finish, then it exits; a SIGKILL
loses nothing (its stream entries are reclaimed by the other senders)."""

from __future__ import annotations

import asyncio
import signal

import structlog
import uvloop

from mail_svc.delivery import delivery_for
from mail_svc.settings import MailSettings
from mail_svc.store import MailStore
from mail_svc.stream import MailStream
from mesh.db import DriverPool, create_engine
from mesh.logs import configure_logging
from mesh.metrics import Metrics
from mesh.redis import create_redis
from mesh.services import MAIL
from mesh.settings import Settings

log = structlog.get_logger("mail_svc.worker")


async def work(settings: Settings, own: MailSettings) -> None:
    metrics = Metrics()
    engine = create_engine(settings, MAIL.schema, f"{MAIL.name}.worker")
    driver = DriverPool(settings, MAIL.schema, f"{MAIL.name}.worker")
    redis = create_redis(settings)
    delivery = delivery_for(settings, own, MailStore(engine, driver), MailStream(redis, own.stream), metrics)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(delivery.stop()))
    metrics_port = metrics.serve(settings.host, settings.metrics_port)
    log.info("sending", senders=own.senders, metrics_port=metrics_port)
    try:
        await delivery.run()
    finally:
        await driver.close()
        await engine.dispose()
        await redis.aclose()
    log.info("stopped")


def main() -> None:
    settings = Settings()
    configure_logging(f"{MAIL.name}.worker", settings.log_level)
    uvloop.run(work(settings, MailSettings()))


if __name__ == "__main__":
    main()

"""mail_svc's periodic work, safe in many replicas at once (SKIP LOCKED): mark expired the pending
emails past their expiry, enqueue again the pending emails whose stream entries were lost (a
failed XADD, a Redis that lost its data, a retry whose sender stopped), and settle the emails a
vanished sender had handed to the relay."""

from __future__ import annotations

import datetime

import structlog
from redis.exceptions import RedisError

from mail_svc.store import MailStore
from mail_svc.stream import MailStream
from mesh.jobs import PeriodicJob

log = structlog.get_logger("mail_svc.jobs")
SWEEP_BATCH = 500


def sweep_job(store: MailStore, stream: MailStream, interval: float, after: float) -> PeriodicJob:
    lost_after = datetime.timedelta(seconds=after)

    async def sweep() -> None:
        while expired := await store.expire_lapsed(SWEEP_BATCH):
            log.info("emails expired unsent", count=expired)
            if expired < SWEEP_BATCH:
                break
        while jobs := await store.due_again(lost_after, SWEEP_BATCH):
            try:
                await stream.enqueue(jobs)
            except RedisError:
                log.warning("mail stream unreachable; pending emails wait for the next sweep", count=len(jobs))
                break
            log.info("pending emails enqueued again", count=len(jobs))
            if len(jobs) < SWEEP_BATCH:
                break
        while settled := await store.settle_unconfirmed(SWEEP_BATCH):
            log.warning("emails settled as sent, unconfirmed", count=settled)
            if settled < SWEEP_BATCH:
                break

    return PeriodicJob("mail-sweep", interval, sweep)

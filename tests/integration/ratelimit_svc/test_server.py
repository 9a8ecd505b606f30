"""ratelimit_svc over real gRPC with real PostgreSQL and Redis: as Envoy calls it (counts per
route and client, exact under concurrency, rules edited while serving, each rule's failure mode
while Redis is away), and its rules as the operator and admin_svc edit them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import grpc
import pytest
from envoy_ratelimit import ratelimit_pb2, rls_pb2, rls_pb2_grpc
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2_grpc

from mesh.channels import open_channel
from mesh.clients import EDGE_TOKEN_HEADER, edge_token
from mesh.errors import field_violations
from mesh.keys import load_kek
from mesh.migrate import upgrade
from mesh.ratelimits import CLIENT_KEY, PAGES, ROUTE_KEY
from mesh.services import OPERATOR, RATELIMIT
from meshctl.embedded import EmbeddedRedis
from ratelimit_svc.domain import Unit
from ratelimit_svc.server import add_servicers
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import refusal
from tests.integration.mesh.trust_fixtures import Trust, make_trust

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
Ask = Callable[..., Awaitable[rls_pb2.RateLimitResponse]]
# Routes the edge has, whose rules these tests change and put back.
WALLET = "/invitemesh.chain.v1.ChainService/GetMyWallet"
LINK = "/invitemesh.chain.v1.ChainService/LinkWallet"
LIST = pb.ListRateLimitRulesRequest()


@pytest.fixture(scope="session")
async def ratelimit_database_url(migrated_database_url: str) -> str:
    await asyncio.to_thread(upgrade, RATELIMIT, migrated_database_url)
    return migrated_database_url


async def _put_rule(database_url: str, route: str, requests: int, unit: Unit, fail_closed: bool = False) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            "INSERT INTO ratelimit.rules (route, requests_per_unit, unit, fail_closed) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (route) DO UPDATE SET requests_per_unit = $2, unit = $3, fail_closed = $4",
            route,
            requests,
            int(unit),
            fail_closed,
        )
    finally:
        await connection.close()


@asynccontextmanager
async def running(tmp_path: Path, database_url: str, redis_url: str) -> AsyncIterator[tuple[str, Trust]]:
    trust = make_trust(tmp_path, database_url, redis_url, ratelimit_rules_cache=0.2)
    server = trust.server(RATELIMIT, add_servicers)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}", trust
    finally:
        await server.stop(0)


@asynccontextmanager
async def asking(address: str, trust: Trust) -> AsyncIterator[Ask]:
    """Envoy's question, as the edge asks it."""
    as_the_edge = ((EDGE_TOKEN_HEADER, edge_token(load_kek(trust.settings))),)
    async with open_channel(address, trust.settings) as channel:
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)

        async def ask(route: str, client: str, *more_routes: str) -> rls_pb2.RateLimitResponse:
            descriptors = [
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[
                        ratelimit_pb2.RateLimitDescriptor.Entry(key=ROUTE_KEY, value=described),
                        ratelimit_pb2.RateLimitDescriptor.Entry(key=CLIENT_KEY, value=client),
                    ]
                )
                for described in (route, *more_routes)
            ]
            request = rls_pb2.RateLimitRequest(domain="invitemesh", descriptors=descriptors)
            return await stub.ShouldRateLimit(request, timeout=5, metadata=as_the_edge)

        yield ask


@asynccontextmanager
async def serving(tmp_path: Path, database_url: str, redis_url: str) -> AsyncIterator[Ask]:
    async with running(tmp_path, database_url, redis_url) as (address, trust), asking(address, trust) as ask:
        yield ask


@asynccontextmanager
async def rules_as(
    caller: str, address: str, trust: Trust
) -> AsyncIterator[ratelimit_service_pb2_grpc.RateLimitRuleServiceAsyncStub]:
    async with open_channel(address, trust.settings, caller, trust.signer(caller)) as channel:
        yield ratelimit_service_pb2_grpc.RateLimitRuleServiceStub(channel)


def _route() -> str:
    return f"/invitemesh.test.v1.Test/Method{uuid.uuid4().hex[:8]}"


def _client() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


async def test_a_client_gets_its_limit_then_over_limit_and_another_client_is_unaffected(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    route, client = _route(), _client()
    await _put_rule(ratelimit_database_url, route, 5, Unit.HOUR)
    async with serving(tmp_path, ratelimit_database_url, redis_url) as ask:
        answers = [await ask(route, client) for _ in range(7)]
        other = await ask(route, _client())

    assert [answer.overall_code for answer in answers] == [OK] * 5 + [OVER_LIMIT] * 2
    assert [answer.statuses[0].limit_remaining for answer in answers] == [4, 3, 2, 1, 0, 0, 0]
    status = answers[-1].statuses[0]
    assert (status.current_limit.requests_per_unit, int(status.current_limit.unit)) == (5, int(Unit.HOUR))
    assert 0 < status.duration_until_reset.ToSeconds() <= 3600
    assert other.overall_code == OK


async def test_each_descriptor_of_a_request_is_counted_and_one_over_its_limit_refuses_the_request(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    tight, loose, client = _route(), _route(), _client()
    await _put_rule(ratelimit_database_url, tight, 2, Unit.HOUR)
    await _put_rule(ratelimit_database_url, loose, 100, Unit.HOUR)
    async with serving(tmp_path, ratelimit_database_url, redis_url) as ask:
        answers = [await ask(tight, client, loose) for _ in range(3)]

    assert [answer.overall_code for answer in answers] == [OK, OK, OVER_LIMIT]
    assert [[status.code for status in answer.statuses] for answer in answers][-1] == [OVER_LIMIT, OK]
    assert [answer.statuses[1].limit_remaining for answer in answers] == [99, 98, 97]


async def test_concurrent_requests_get_exactly_the_limit(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    route, client = _route(), _client()
    await _put_rule(ratelimit_database_url, route, 30, Unit.HOUR)
    async with serving(tmp_path, ratelimit_database_url, redis_url) as ask:
        answers = await asyncio.gather(*(ask(route, client) for _ in range(100)))

    assert sum(answer.overall_code == OK for answer in answers) == 30


async def test_a_route_without_a_rule_falls_under_the_default_and_an_edited_rule_applies_soon(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    route, client = _route(), _client()
    async with serving(tmp_path, ratelimit_database_url, redis_url) as ask:
        default = await ask(route, client)
        await _put_rule(ratelimit_database_url, route, 1, Unit.HOUR)

        async def own_rule_in_force() -> bool:
            return bool((await ask(route, client)).overall_code == OVER_LIMIT)

        await eventually(own_rule_in_force, what="the edited rule in force")

    assert default.overall_code == OK
    assert default.statuses[0].current_limit.name == "*"


async def test_with_redis_away_a_guessing_target_closes_and_other_routes_stay_open(
    tmp_path: Path, ratelimit_database_url: str, own_redis: EmbeddedRedis
) -> None:
    ordinary = _route()
    async with serving(tmp_path, ratelimit_database_url, own_redis.url) as ask:
        assert (await ask("/invitemesh.invite.v1.InviteService/CheckCode", _client())).overall_code == OK
        own_redis.stop()

        check = await ask("/invitemesh.invite.v1.InviteService/CheckCode", _client())
        other = await ask(ordinary, _client())

    assert check.overall_code == OVER_LIMIT
    assert other.overall_code == OK


async def test_only_the_edge_is_answered(tmp_path: Path, ratelimit_database_url: str, redis_url: str) -> None:
    """Anyone else could spend a client's budget (security issue 14.4)."""
    trust = make_trust(tmp_path, ratelimit_database_url, redis_url)
    server = trust.server(RATELIMIT, add_servicers)
    await server.start()
    request = rls_pb2.RateLimitRequest(
        domain="invitemesh",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=CLIENT_KEY, value=_client())]
            )
        ],
    )
    try:
        async with open_channel(f"127.0.0.1:{server.port}", trust.settings) as channel:
            stub = rls_pb2_grpc.RateLimitServiceStub(channel)
            refusals = [
                await refusal(stub.ShouldRateLimit(request, timeout=5, metadata=metadata))
                for metadata in (None, ((EDGE_TOKEN_HEADER, "a guess"),))
            ]
    finally:
        await server.stop(0)

    assert refusals == [(grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_EDGE")] * 2


def _rule(route: str, requests: int, unit: pb.TimeUnit.ValueType, fail_closed: bool = False) -> pb.RateLimitRule:
    return pb.RateLimitRule(route=route, requests_per_unit=requests, unit=unit, fail_closed=fail_closed)


async def test_the_operator_sets_a_rule_the_edge_then_meets_and_resets_it_to_its_default(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    client = _client()
    async with (
        running(tmp_path, ratelimit_database_url, redis_url) as (address, trust),
        rules_as(OPERATOR, address, trust) as rules,
        asking(address, trust) as ask,
    ):
        before = (await rules.ListRateLimitRules(LIST)).rules
        set_ = await rules.UpdateRateLimitRule(
            pb.UpdateRateLimitRuleRequest(rule=_rule(WALLET, 2, pb.TIME_UNIT_HOUR, fail_closed=True))
        )
        listed = {rule.route: rule for rule in (await rules.ListRateLimitRules(LIST)).rules}
        answers = [(await ask(WALLET, client)).overall_code for _ in range(3)]
        reset = await rules.DeleteRateLimitRule(pb.DeleteRateLimitRuleRequest(route=WALLET))
        after = (await rules.ListRateLimitRules(LIST)).rules

    expected = _rule(WALLET, 2, pb.TIME_UNIT_HOUR, fail_closed=True)
    assert set_.rule == expected
    assert listed[WALLET] == expected
    assert listed["/invitemesh.invite.v1.InviteService/CheckCode"].default
    assert [rule.route for rule in listed.values()] == sorted(listed)
    assert answers == [OK, OK, OVER_LIMIT]
    # GetMyWallet has no default of its own: the rule of every other route applies again.
    star = next(rule for rule in after if rule.route == "*")
    assert (reset.rule.route, reset.rule.requests_per_unit, reset.rule.unit) == (
        WALLET,
        star.requests_per_unit,
        star.unit,
    )
    assert WALLET not in {rule.route for rule in after}
    assert after == before


async def test_a_bad_rule_is_refused_with_each_field_named_and_changes_nothing(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    bad = pb.RateLimitRule(route="/invitemesh.test.v1.Test/Nothing", requests_per_unit=-1)
    async with (
        running(tmp_path, ratelimit_database_url, redis_url) as (address, trust),
        rules_as(OPERATOR, address, trust) as rules,
    ):
        before = await rules.ListRateLimitRules(LIST)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rules.UpdateRateLimitRule(pb.UpdateRateLimitRuleRequest(rule=bad))
        with pytest.raises(grpc.aio.AioRpcError) as refused_reset:
            await rules.DeleteRateLimitRule(pb.DeleteRateLimitRuleRequest(route="not a route"))
        after = await rules.ListRateLimitRules(LIST)

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(refused.value)} == {"rule.route", "rule.requests_per_unit", "rule.unit"}
    assert [v.field for v in field_violations(refused_reset.value)] == ["route"]
    assert after == before


async def test_admin_svc_may_edit_rules_and_other_services_and_unsigned_callers_may_not(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    update = pb.UpdateRateLimitRuleRequest(rule=_rule(LINK, 5, pb.TIME_UNIT_MINUTE))
    async with running(tmp_path, ratelimit_database_url, redis_url) as (address, trust):
        async with rules_as("admin_svc", address, trust) as as_admin_svc:
            admitted = await as_admin_svc.UpdateRateLimitRule(update)
            await as_admin_svc.DeleteRateLimitRule(pb.DeleteRateLimitRuleRequest(route=LINK))
        async with rules_as("invite_svc", address, trust) as as_invite_svc:
            other_service = await refusal(as_invite_svc.UpdateRateLimitRule(update))
        async with open_channel(address, trust.settings) as channel:
            unsigned = await refusal(
                ratelimit_service_pb2_grpc.RateLimitRuleServiceStub(channel).UpdateRateLimitRule(update)
            )

    assert admitted.rule.requests_per_unit == 5
    assert other_service == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert unsigned == (grpc.StatusCode.UNAUTHENTICATED, "CALL_SIGNATURE_MISSING")


async def test_pages_have_a_rule_of_their_own_to_set(
    tmp_path: Path, ratelimit_database_url: str, redis_url: str
) -> None:
    client = _client()
    async with (
        running(tmp_path, ratelimit_database_url, redis_url) as (address, trust),
        rules_as(OPERATOR, address, trust) as rules,
        asking(address, trust) as ask,
    ):
        set_ = await rules.UpdateRateLimitRule(pb.UpdateRateLimitRuleRequest(rule=_rule(PAGES, 1, pb.TIME_UNIT_HOUR)))
        answers = [(await ask(PAGES, client)).overall_code for _ in range(2)]
        await rules.DeleteRateLimitRule(pb.DeleteRateLimitRuleRequest(route=PAGES))

    assert set_.rule.route == PAGES
    assert answers == [OK, OVER_LIMIT]

"""What `meshctl` asks of the running services, through their contracts and signed as the
operator (`mesh.services.OPERATOR`): invite codes from invite_svc, rate-limit rules from
ratelimit_svc. Nothing here reads or writes a service's schema."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2_grpc

from mesh.channels import open_channel
from mesh.errors import error_info, field_violations
from mesh.services import INVITE, OPERATOR, RATELIMIT, ServiceSpec
from mesh.settings import Settings
from mesh.signing import signer_for
from meshctl.stack import StackFile, process_alive

LOCAL_OPERATOR = uuid.uuid5(uuid.NAMESPACE_URL, "invitemesh:meshctl")
"""The owner of codes minted by hand, until admin accounts exist."""
TIME_UNITS = {"second": ratelimit_pb.TIME_UNIT_SECOND, "minute": ratelimit_pb.TIME_UNIT_MINUTE,
              "hour": ratelimit_pb.TIME_UNIT_HOUR, "day": ratelimit_pb.TIME_UNIT_DAY}  # fmt: skip


class NotRunning(Exception):
    """The stack (or the service asked for) is not running."""


@asynccontextmanager
async def operator_channel(settings: Settings, service: ServiceSpec) -> AsyncIterator[grpc.aio.Channel]:
    """A signed channel to `service`: where `MESH_SERVICE_ADDRESSES` puts it (a deployment), else
    in the stack `meshctl up` runs."""
    address = settings.service_addresses.get(service.name)
    if address is None:
        found = StackFile.read(settings.state_dir.absolute())
        part = found.part(service.name) if found is not None and process_alive(found.supervisor_pid) else None
        if part is None:
            raise NotRunning(f"{service.name} is not running: `meshctl up` first, or set MESH_SERVICE_ADDRESSES")
        address = part.address
    async with open_channel(address, settings, OPERATOR, signer_for(OPERATOR, settings)) as channel:
        yield channel


async def mint_codes(settings: Settings, args: argparse.Namespace) -> int:
    async with operator_channel(settings, INVITE) as channel:
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)
        campaign_id = await _campaign(stub, args.campaign, args.invite_quota) if args.campaign else ""
        request = invite_pb.MintCodesRequest(
            count=args.count, max_uses=args.max_uses, owner=invite_pb.Owner(admin_id=str(LOCAL_OPERATOR)),
            campaign_id=campaign_id, request_id=uuid.uuid4().hex,
        )  # fmt: skip
        if args.expires_in:
            request.expire_time.FromDatetime(datetime.datetime.now(datetime.UTC) + args.expires_in)
        minted = (await stub.MintCodes(request)).codes
    if args.json:
        print(json.dumps([MessageToDict(code) for code in minted], indent=2))
    else:
        print("\n".join(code.code for code in minted))
    return 0


async def _campaign(stub: invite_service_pb2_grpc.InviteServiceAsyncStub, name: str, invite_quota: int) -> str:
    """The id of the campaign named `name`, made when missing."""
    wanted = invite_pb.Campaign(display_name=name, invite_quota=invite_quota)
    creation = invite_pb.CreateCampaignRequest(campaign=wanted, request_id=f"meshctl:{name}")
    try:
        return str((await stub.CreateCampaign(creation)).campaign.id)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    token = ""
    while True:
        page = await stub.ListCampaigns(invite_pb.ListCampaignsRequest(page_size=500, page_token=token))
        for campaign in page.campaigns:
            if campaign.display_name == name:
                return str(campaign.id)
        if not (token := page.next_page_token):
            raise LookupError(f"no campaign named {name!r}")


async def rate_limits(settings: Settings, args: argparse.Namespace) -> int:
    async with operator_channel(settings, RATELIMIT) as channel:
        stub = ratelimit_service_pb2_grpc.RateLimitRuleServiceStub(channel)
        if args.ratelimits_command == "set":
            rule = ratelimit_pb.RateLimitRule(
                route=args.route, requests_per_unit=args.requests, unit=TIME_UNITS[args.per],
                fail_closed=args.fail_closed,
            )  # fmt: skip
            print(_line((await stub.UpdateRateLimitRule(ratelimit_pb.UpdateRateLimitRuleRequest(rule=rule))).rule))
        elif args.ratelimits_command == "reset":
            request = ratelimit_pb.DeleteRateLimitRuleRequest(route=args.route)
            print(_line((await stub.DeleteRateLimitRule(request)).rule))
        else:
            rules = (await stub.ListRateLimitRules(ratelimit_pb.ListRateLimitRulesRequest())).rules
            if args.json:
                print(json.dumps([MessageToDict(rule, always_print_fields_with_no_presence=True) for rule in rules]))
            else:
                print("\n".join(map(_line, rules)))
    return 0


def _line(rule: ratelimit_pb.RateLimitRule) -> str:
    unit = ratelimit_pb.TimeUnit.Name(rule.unit).removeprefix("TIME_UNIT_").lower()
    notes = [note for note, applies in (("fails closed", rule.fail_closed), ("default", rule.default)) if applies]
    return f"{rule.route:<52} {rule.requests_per_unit:>7} per {unit}" + "".join(f"  {note}" for note in notes)


def run(request: Coroutine[Any, Any, int]) -> int:
    """Runs an operator's request; says why when the stack is down or a service refuses (exit
    status 2 for bad input, else 1)."""
    try:
        return asyncio.run(request)
    except NotRunning as error:
        print(f"meshctl: {error}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        reasons = "; ".join(f"{v.field}: {v.description}" for v in field_violations(error)) or error.details()
        print(f"meshctl: {info.reason if info else error.code().name}: {reasons}", file=sys.stderr)
        return 2 if error.code() == grpc.StatusCode.INVALID_ARGUMENT else 1

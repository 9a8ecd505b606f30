"""`meshctl admins` and `meshctl audit`: the first owner of an empty database, the list of admins,
and an independent check of the audit log's hash chain and signatures. Each goes through
admin_svc's contract, signed as the operator; the audit check verifies with the public keys of
the local trust file, not with anything the service says about itself."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import segno
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.admin.v1 import admin_service_pb2_grpc

from mesh.access import ADMIN_ROLES, AdminRole
from mesh.audit_chain import first_break
from mesh.keys import TrustFile
from mesh.services import ADMIN
from mesh.settings import Settings
from meshctl.operator import operator_channel

_PAGE = 500


def read_password() -> str:
    """From a prompt (twice) on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("meshctl: the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\r\n")


async def create_admin(settings: Settings, args: argparse.Namespace) -> int:
    request = pb.CreateAdminRequest(
        email=args.email,
        password=read_password(),
        role=ADMIN_ROLES[args.role],  # type: ignore[arg-type]
        request_id=uuid.uuid4().hex,
    )
    async with operator_channel(settings, ADMIN) as channel:
        created = await admin_service_pb2_grpc.AdminServiceStub(channel).CreateAdmin(request)
    if args.json:
        print(json.dumps({"admin": _admin(created.admin), "totpUri": created.totp_uri}))
        return 0
    print(f"admin {created.admin.id} ({created.admin.email}, {args.role})")
    print(f"add this to an authenticator app: {created.totp_uri}")
    if sys.stdout.isatty():
        segno.make(created.totp_uri).terminal(compact=True)
    return 0


async def list_admins(settings: Settings, args: argparse.Namespace) -> int:
    async with operator_channel(settings, ADMIN) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        admins = [admin async for page in _pages(stub.ListAdmins, pb.ListAdminsRequest) for admin in page.admins]
    if args.json:
        print(json.dumps([_admin(admin) for admin in admins]))
    for admin in [] if args.json else admins:
        role = AdminRole(admin.role).claim
        state = pb.AdminState.Name(admin.state).removeprefix("ADMIN_STATE_").lower()
        print(f"{admin.id}  {admin.email:<40} {role:<9} {state}")
    return 0


async def verify_audit_log(settings: Settings, args: argparse.Namespace) -> int:
    async with operator_channel(settings, ADMIN) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        listing = _pages(stub.ListAuditLogEntries, pb.ListAuditLogEntriesRequest)
        entries = [entry async for page in listing for entry in page.entries]
    keys = TrustFile.read(settings.resolved_keys_dir / "trust.json").signature_keys(ADMIN.name)
    broken = first_break(reversed(entries), keys)
    if broken is not None:
        print(f"audit log broken at entry {broken.sequence} ({broken.entry_id}): {broken.why}", file=sys.stderr)
        return 1
    print(f"audit log verified: {len(entries)} entries, every link and signature holds")
    return 0


async def _pages(method: Callable[[Any], Awaitable[Any]], request: Callable[..., Message]) -> AsyncIterator[Any]:
    """Every page of a listing, from the first to the one without a `next_page_token`."""
    token = ""
    while True:
        page = await method(request(page_size=_PAGE, page_token=token))
        yield page
        if not (token := page.next_page_token):
            return


def _admin(admin: pb.Admin) -> dict[str, object]:
    return MessageToDict(admin)

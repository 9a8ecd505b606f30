"""Admin accounts: created (by an owner, or by meshctl for the first one), listed, and changed
(role, state), each change committed with its audit entry. A change ends the admin's sessions at
once, so a new role or a disabled account takes effect now, not when a token lapses."""

from __future__ import annotations

import uuid

from invitemesh.admin.v1 import admin_service_pb2 as pb

from admin_svc.audit import Auditor, actor_of
from admin_svc.domain import AdminState, new_totp_secret, totp_uri
from admin_svc.sessions import AdminSessions, admin_message, totp_seal_record
from admin_svc.store.accounts import AccountStore, NewAdmin
from mesh.access import ADMIN_ROLES, AdminRole, current_principal
from mesh.cursors import PageTokens, page_size
from mesh.emails import InvalidEmail, canonical_email, checked_address
from mesh.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, MeshError, NotFound
from mesh.passwords import Passwords, password_problem
from mesh.sealing import Sealer

MAX_REQUEST_ID = 200
_ROLES = frozenset(map(int, ADMIN_ROLES.values()))
_STATES = frozenset(int(state) for state in AdminState)
_LISTING = "admins"


class Admins:
    def __init__(
        self,
        accounts: AccountStore,
        passwords: Passwords,
        totp_sealer: Sealer,
        sessions: AdminSessions,
        auditor: Auditor,
        pages: PageTokens,
    ) -> None:
        self._accounts = accounts
        self._passwords = passwords
        self._totp_sealer = totp_sealer
        self._sessions = sessions
        self._auditor = auditor
        self._pages = pages

    async def create_admin(self, request: pb.CreateAdminRequest) -> pb.CreateAdminResponse:
        violations: list[FieldViolation] = []
        email = checked_address("email", request.email.strip(), violations)
        canonical = None
        if email is not None:
            try:
                canonical = canonical_email(email)
            except InvalidEmail:
                violations.append(FieldViolation("email", "not an email address"))
        if (problem := password_problem(request.password)) is not None:
            violations.append(FieldViolation("password", problem))
        if request.role not in _ROLES:
            violations.append(FieldViolation("role", "ADMIN_ROLE_VIEWER, _OPERATOR or _OWNER"))
        if len(request.request_id) > MAX_REQUEST_ID:
            violations.append(FieldViolation("request_id", f"at most {MAX_REQUEST_ID} characters"))
        if violations:
            raise InvalidArgument(violations)
        assert email is not None and canonical is not None
        actor = actor_of(current_principal.get())
        admin_id, secret = uuid.uuid4(), new_totp_secret()
        new = NewAdmin(
            id=admin_id,
            email=email,
            canonical_email=canonical,
            password_hash=await self._passwords.hash(request.password),
            role=AdminRole(request.role),
            sealed_totp_secret=self._totp_sealer.seal(totp_seal_record(admin_id), secret.encode()),
            create_request=f"{actor}:{request.request_id}" if request.request_id else None,
        )
        try:
            async with self._auditor.transaction() as connection:
                admin = await self._accounts.create(connection, new)
                await self._auditor.record(connection, "CreateAdmin", str(admin.id), request)
        except AlreadyExists as exists:
            await self._auditor.refused("CreateAdmin", canonical, request, exists)
            raise
        if admin.id != admin_id:  # the same request again: the admin it made, with its own secret
            secret = self._totp_sealer.unseal(totp_seal_record(admin.id), admin.sealed_totp_secret).decode()
        return pb.CreateAdminResponse(admin=admin_message(admin), totp_uri=totp_uri(secret, admin.email))

    async def list_admins(self, request: pb.ListAdminsRequest) -> pb.ListAdminsResponse:
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        after = self._pages.keyset_after(request.page_token, _LISTING, violations)
        if violations:
            raise InvalidArgument(violations)
        page = await self._accounts.page(size, after)
        return pb.ListAdminsResponse(
            admins=[admin_message(admin) for admin in page],
            next_page_token=self._pages.keyset_next([(a.create_time, a.id) for a in page], size, _LISTING),
        )

    async def update_admin(self, request: pb.UpdateAdminRequest) -> pb.UpdateAdminResponse:
        violations: list[FieldViolation] = []
        admin_id = _uuid("admin.id", request.admin.id, violations)
        paths = set(request.update_mask.paths)
        if not paths or paths - {"role", "state"}:
            violations.append(FieldViolation("update_mask", "role, state or both"))
        if "role" in paths and request.admin.role not in _ROLES:
            violations.append(FieldViolation("admin.role", "ADMIN_ROLE_VIEWER, _OPERATOR or _OWNER"))
        if "state" in paths and request.admin.state not in _STATES:
            violations.append(FieldViolation("admin.state", "ADMIN_STATE_ACTIVE or ADMIN_STATE_DISABLED"))
        if violations:
            raise InvalidArgument(violations)
        assert admin_id is not None
        role = AdminRole(request.admin.role) if "role" in paths else None
        state = AdminState(request.admin.state) if "state" in paths else None
        try:
            if str(admin_id) == current_principal.get().id:
                # The one sure way never to lock the last owner out: nobody demotes or disables themselves.
                raise FailedPrecondition("ADMIN_CHANGES_ITSELF", "another owner must change your own account")
            async with self._auditor.transaction() as connection:
                changed, ended = await self._accounts.change(connection, admin_id, role, state)
                if changed is None:
                    raise NotFound("ADMIN_NOT_FOUND", "no admin has this id")
                await self._auditor.record(connection, "UpdateAdmin", str(admin_id), request)
        except MeshError as refused:
            await self._auditor.refused("UpdateAdmin", str(admin_id), request, refused)
            raise
        await self._sessions.tell(ended)
        return pb.UpdateAdminResponse(admin=admin_message(changed))


def _uuid(field: str, value: str, violations: list[FieldViolation]) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.append(FieldViolation(field, "not a UUID"))
        return None

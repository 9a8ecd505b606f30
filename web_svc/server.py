"""web_svc's HTTP surface: routes ⇄ flows, the answers to refusals, and `serve()`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
import structlog
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mesh.clients import edge_token, web_token
from mesh.keys import load_kek
from mesh.logs import configure_logging
from mesh.redis import create_redis
from mesh.sealing import derive_key
from mesh.services import WEB
from mesh.settings import Settings
from web_svc import domain
from web_svc.account import Account
from web_svc.busy import BusyForms
from web_svc.calls import Mesh, Refused
from web_svc.console import Console
from web_svc.pages import STATIC, page, see_other
from web_svc.passkeys import ConsolePasskeys
from web_svc.recovery import Recovery
from web_svc.reservation import Reservation
from web_svc.security import Guard, start_over
from web_svc.sessions import Sessions
from web_svc.settings import WebSettings
from web_svc.sign_in import SignIn
from web_svc.store import AdminStore, WebStore
from web_svc.waitlist import WaitlistPages
from web_svc.wallets import Wallets

log = structlog.get_logger("web_svc")


class _Static(StaticFiles):
    """The vendored htmx, the scripts and the stylesheet: the same for everyone, cached an hour."""

    async def get_response(self, path: str, scope: dict) -> Response:  # type: ignore[type-arg,override]
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=3600"
        return response


def create_app(settings: Settings, own: WebSettings) -> Starlette:
    kek = load_kek(settings)
    redis = create_redis(settings)
    mesh = Mesh(own.edge_address, web_token(kek), own.call_timeout)
    store = WebStore(redis)
    sessions = Sessions(store, mesh, own.refresh_before)
    busy_forms = BusyForms(derive_key(kek, "web busy resend v1"))
    reservation = Reservation(mesh, store, sessions, own.resends, busy_forms)
    sign_in = SignIn(mesh, sessions, busy_forms)
    recovery = Recovery(mesh, busy_forms)
    waitlist = WaitlistPages(mesh)
    wallets = Wallets(mesh, sessions)
    account = Account(mesh, sessions, wallets, own.public_url)
    admins = AdminStore(redis)
    console = Console(mesh, admins)
    passkeys = ConsolePasskeys(mesh, admins, console)

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def not_found(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, HTTPException) else 500
        message = error.detail if isinstance(error, HTTPException) and status != 404 else None
        return page(request, "error.html.j2", status=status, message=message or "There is no page here.")

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, Refused)
        if request.url.path.startswith("/admin"):
            return await console_refused(request, error)
        if error.code is grpc.StatusCode.UNAUTHENTICATED:
            # The session ended elsewhere (signed out, password reset, suspended): sign in again.
            await store.drop_session(request.state.browser_id)
            start_over(request)
            return see_other("/sign-in")
        return unavailable(request, error)

    async def console_refused(request: Request, error: Refused) -> Response:
        if error.code is grpc.StatusCode.UNAUTHENTICATED:
            # Expired (admins have no refresh token), revoked, or the role changed: sign in again.
            await console.forget(request)
            return see_other("/admin/sign-in")
        if error.code is grpc.StatusCode.PERMISSION_DENIED:
            return page(request, "error.html.j2", status=403, message="Your role may not do this.")
        return unavailable(request, error)

    def unavailable(request: Request, error: Refused) -> Response:
        message = domain.message_for(error.reason)
        response = page(request, "error.html.j2", status=error.http_status(503), message=message)
        if error.retry_after is not None:
            response.headers["retry-after"] = str(error.retry_after)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await mesh.close()
        await redis.aclose()

    routes = [
        Route("/", reservation.reserve_page, methods=["GET"]),
        Route("/", reservation.reserve, methods=["POST"]),
        Route("/check-code", reservation.check_code, methods=["POST"]),
        Route("/verify", reservation.verify_page, methods=["GET"]),
        Route("/verify", reservation.verify, methods=["POST"]),
        Route("/verify/resend", reservation.resend, methods=["POST"]),
        Route("/waitlist", waitlist.join_page, methods=["GET"]),
        Route("/waitlist", waitlist.join, methods=["POST"]),
        Route("/waitlist/me", waitlist.place_page, methods=["GET"]),
        Route("/waitlist/me", waitlist.place, methods=["POST"]),
        Route("/sign-in", sign_in.sign_in_page, methods=["GET"]),
        Route("/sign-in", sign_in.sign_in, methods=["POST"]),
        Route("/sign-out", sign_in.sign_out_page, methods=["GET"]),
        Route("/sign-out", sign_in.sign_out, methods=["POST"]),
        Route("/reset-password", recovery.reset_page, methods=["GET"]),
        Route("/reset-password", recovery.request_link, methods=["POST"]),
        Route("/reset-password/confirm", recovery.reset, methods=["POST"]),
        Route("/me", account.me, methods=["GET"]),
        Route("/me/wallet/challenge", wallets.challenge, methods=["POST"]),
        Route("/me/wallet/link", wallets.link, methods=["POST"]),
        Route("/me/wallet/unlink", wallets.unlink, methods=["POST"]),
        Route("/admin/sign-in", console.sign_in_page, methods=["GET"]),
        Route("/admin/sign-in", console.sign_in, methods=["POST"]),
        Route("/admin/sign-in/code", console.code_page, methods=["GET"]),
        Route("/admin/sign-in/code", console.verify_code, methods=["POST"]),
        Route("/admin/sign-in/passkey/options", passkeys.sign_in_options, methods=["POST"]),
        Route("/admin/sign-in/passkey", passkeys.sign_in, methods=["POST"]),
        Route("/admin/sign-out", console.sign_out, methods=["POST"]),
        Route("/admin/passkeys", passkeys.page, methods=["GET"]),
        Route("/admin/passkeys", passkeys.register, methods=["POST"]),
        Route("/admin/passkeys/options", passkeys.registration_options, methods=["POST"]),
        Route("/admin", console.dashboard, methods=["GET"]),
        Route("/admin/codes", console.codes, methods=["GET"]),
        Route("/admin/codes/disable", console.disable_code, methods=["POST"]),
        Route("/admin/campaigns", console.campaigns, methods=["GET"]),
        Route("/admin/campaigns", console.create_campaign, methods=["POST"]),
        Route("/admin/campaigns/top-up", console.set_campaign_top_up, methods=["POST"]),
        Route("/admin/users", console.users, methods=["GET"]),
        Route("/admin/users", console.change_user, methods=["POST"]),
        Route("/admin/waitlist", console.waitlist, methods=["GET"]),
        Route("/admin/waitlist/release", console.release_waitlist, methods=["POST"]),
        Route("/admin/waitlist/change", console.change_waitlist_entry, methods=["POST"]),
        Route("/admin/mail", console.mail_log, methods=["GET"]),
        Route("/admin/rate-limits", console.rate_limits, methods=["GET"]),
        Route("/admin/rate-limits", console.update_rate_limits, methods=["POST"]),
        Route("/admin/audit", console.audit_log, methods=["GET"]),
        Route(WEB.health_path, health, methods=["GET"]),
        Mount("/static", _Static(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: not_found, Refused: refused},
        lifespan=lifespan,
    )
    app.add_middleware(
        Guard,
        edge_token=edge_token(kek),
        csrf_key=derive_key(kek, "web csrf v1"),
        secure_cookies=own.secure_cookies,
    )
    return app


class WebServer:
    """web_svc on `settings.host` and `own.port` (0: a free port, told by `port` once started)."""

    def __init__(self, settings: Settings, own: WebSettings) -> None:
        config = uvicorn.Config(
            create_app(settings, own),
            host=settings.host,
            port=own.port,
            loop="none",
            lifespan="on",
            # Envoy logs every request already; uvicorn's own line would carry query strings,
            # and `/?code=…` holds an invite code.
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=int(settings.grace_period),
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("web_svc stopped before it started")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def run(self) -> None:
        await self._server.serve()

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


async def serve(settings: Settings | None = None, own: WebSettings | None = None) -> None:
    """Serves until SIGTERM or SIGINT (uvicorn's own handling: no new connections, and requests
    in flight get `MESH_GRACE_PERIOD` seconds to finish)."""
    settings = settings or Settings()
    own = own or WebSettings()
    configure_logging(WEB.name, settings.log_level)
    log.info("serving", port=own.port, edge=own.edge_address)
    await WebServer(settings, own).run()


def main() -> None:
    uvloop.run(serve())

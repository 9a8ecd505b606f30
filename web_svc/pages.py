"""Rendering: one Jinja2 environment over `templates/`, and the answer shapes every page uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse

from web_svc.busy import RESEND_FIELD, Busy
from web_svc.security import CSRF_FIELD, PERSONAL, csrf_token

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

_environment = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    personal: bool = False,
    signed_in: bool = False,
    private: bool = False,
    busy: Busy | None = None,
    **context: Any,
) -> HTMLResponse:
    """`template` rendered for this browser: its CSRF token in every form, and no-store when the
    page shows a signed-in person's data (`personal`) or what a private link shows (`private`).
    A form the mesh was too `busy` to take carries its sealed resend (web_svc.busy)."""
    html = _environment.get_template(template).render(
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(request),
        path=request.url.path,
        signed_in=signed_in or personal,
        busy=busy,
        resend_field=RESEND_FIELD,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if personal or private or busy:
        response.headers["cache-control"] = PERSONAL
    if busy:
        response.headers.update(busy.headers)
    return response


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """A piece of a page, for htmx to swap in."""
    return HTMLResponse(_environment.get_template(template).render(**context))


def see_other(path: str) -> RedirectResponse:
    """After a form: the browser fetches `path` with GET, so reloading never sends the form again."""
    return RedirectResponse(path, status_code=303)


def script_failure(message: str, status: int) -> JSONResponse:
    """A refusal for a page's script to show: `{"message": …}` in a person's words."""
    return JSONResponse({"message": message}, status_code=status)

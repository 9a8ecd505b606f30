"""Real browsers for the page tests: Debian's Chromium (`/usr/bin/chromium`, or `MESH_CHROMIUM`)
driven by Playwright, each person in a context of their own that reaches the edge from a loopback
address of its own.

A browser cannot choose the address it connects from, so each person's context talks to a relay:
a TCP relay that takes connections on a port of its own and opens each onward connection to the
edge from the person's address. The edge sees that address as the client's, as it would see a
person's own in production (and a Redis given by MESH_REDIS_URL, whose budgets outlive a run,
never sees the same one twice)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.e2e.conftest import loopback_client

CHROMIUM = os.environ.get("MESH_CHROMIUM", "/usr/bin/chromium")
# Headless as root, and quiet: this machine's network is closed, and Chromium's background
# connections would be refused many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Relay:
    """Connections to `port` go on to `edge`, each from `source` (a thread per direction: a
    browser holds a handful of connections)."""

    def __init__(self, edge: str, source: str) -> None:
        host, port = edge.rsplit(":", 1)
        self._edge = (host, int(port))
        self.source = source
        self._listening = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listening.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                browser_side, _ = self._listening.accept()
                edge_side = socket.create_connection(self._edge, timeout=30, source_address=(self.source, 0))
            except OSError:
                return
            edge_side.settimeout(None)
            self._open += [browser_side, edge_side]
            threading.Thread(target=_pipe, args=(browser_side, edge_side), daemon=True).start()
            threading.Thread(target=_pipe, args=(edge_side, browser_side), daemon=True).start()

    def close(self) -> None:
        self._listening.close()
        for connection in self._open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def person(browser: Browser, edge: str, width: int = 1280, javascript: bool = True) -> Iterator[BrowserContext]:
    """A browser context of one person: cookies of its own, and an address of its own at the edge."""
    relay = Relay(edge, loopback_client())
    context = browser.new_context(
        base_url=relay.url, viewport={"width": width, "height": 900}, java_script_enabled=javascript
    )
    context.set_default_timeout(15_000)
    try:
        yield context
    finally:
        context.close()
        relay.close()


def path_of(link: str) -> str:
    """A link from a mail (to the edge) without its origin: the same page on a person's relay."""
    parts = urlsplit(link)
    return parts._replace(scheme="", netloc="").geturl()

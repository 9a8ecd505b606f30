"""web_svc's own settings, `MESH_WEB_*`."""

from __future__ import annotations

from pydantic import Field, field_validator

from mesh.settings import MeshSettings, require_scheme


class WebSettings(MeshSettings, env_prefix="MESH_WEB_"):
    port: int = Field(default=0, ge=0, le=65535)
    """web_svc's HTTP port (`0`: any free port; `meshctl` assigns it)"""
    edge_address: str = "127.0.0.1:8081"
    """`host:port` of the edge's listener for web_svc's calls on a browser's behalf (`meshctl` sets
    it)"""
    public_url: str | None = None
    """the origin people reach the pages at, e.g. `https://invites.example.com`, for share links;
    unset, the address a request came to"""
    secure_cookies: bool = False
    """`1`: people reach the pages over HTTPS, so the session cookie is `Secure` and
    `__Host-`-prefixed"""
    call_timeout: float = Field(default=12.0, gt=0)
    """seconds a page waits for a call it makes through the edge"""
    resends: int = Field(default=3, ge=0)
    """verification mails the verify page offers to send again, per registration"""
    refresh_before: float = Field(default=60.0, ge=0)
    """seconds before an access token expires that a page renews it with the refresh token"""

    @field_validator("public_url")
    @classmethod
    def _origin(cls, url: str | None) -> str | None:
        return require_scheme(url, ("http", "https"))

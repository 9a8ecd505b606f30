from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_svc.settings import AuthSettings
from invite_svc.settings import InviteSettings
from mail_svc.settings import MailSettings
from mesh.settings import MeshSettings, Settings
from meshctl.settings import StackSettings
from ratelimit_svc.settings import RateLimitSettings


def test_reads_mesh_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("MESH_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("MESH_STATE_DIR", "/srv/mesh")

    settings = Settings()

    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.state_dir == Path("/srv/mesh")


def test_each_service_reads_its_own_prefix_and_the_tooling_the_shared_one_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_AUTH_ACCESS_TTL", "60")
    monkeypatch.setenv("MESH_INVITE_HOLD_TTL", "61")
    monkeypatch.setenv("MESH_MAIL_FROM", "us <us@example.com>")
    monkeypatch.setenv("MESH_RATELIMIT_RULES_CACHE", "0")
    monkeypatch.setenv("MESH_EDGE_PORT", "9090")
    monkeypatch.setenv("MESH_LOG_LEVEL", "ERROR")

    stack = StackSettings()

    assert AuthSettings().access_ttl == 60
    assert InviteSettings().hold_ttl == 61
    assert MailSettings().sender == "us <us@example.com>"
    assert RateLimitSettings().rules_cache == 0
    assert (stack.edge_port, stack.log_level) == (9090, "ERROR")


@pytest.mark.parametrize(
    "given",
    [Settings(grace_period=3, tls=True), AuthSettings(access_ttl=61), MailSettings(sender="us <us@example.com>")],
    ids=["shared", "auth", "mail, by its variable MESH_MAIL_FROM"],
)
def test_the_environment_of_given_settings_reads_back_the_same(
    monkeypatch: pytest.MonkeyPatch, given: MeshSettings
) -> None:
    for variable, value in given.environment().items():
        monkeypatch.setenv(variable, value)

    assert type(given)() == given


def test_defaults_run_everything_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MESH_DATABASE_URL", "MESH_REDIS_URL", "MESH_SMTP_URL", "MESH_EDGE_PORT", "MESH_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)

    settings = StackSettings()

    assert (settings.database_url, settings.redis_url, settings.smtp_url) == (None, None, None)
    assert settings.edge_port == 8080
    assert settings.state_dir == Path(".mesh")


@pytest.mark.parametrize(
    ("kind", "variable", "value"),
    [
        (Settings, "MESH_DATABASE_URL", "mysql://db/x"),
        (Settings, "MESH_REDIS_URL", "http://cache"),
        (Settings, "MESH_SMTP_URL", "imap://mail"),
        (Settings, "MESH_LOG_LEVEL", "LOUD"),
        (Settings, "MESH_GRACE_PERIOD", "0"),
        (StackSettings, "MESH_EDGE_PORT", "70000"),
        (AuthSettings, "MESH_AUTH_RESET_URL", "javascript:alert(1)"),
        (AuthSettings, "MESH_AUTH_SIGN_IN_URL", "https://"),
        (AuthSettings, "MESH_AUTH_ARGON2_MEMORY_KIB", "4096"),
        (InviteSettings, "MESH_INVITE_DEFAULT_QUOTA", "101"),
        (MailSettings, "MESH_MAIL_STREAM", "no spaces"),
        (RateLimitSettings, "MESH_RATELIMIT_RULES_CACHE", "-1"),
    ],
)
def test_rejects_bad_values(
    monkeypatch: pytest.MonkeyPatch, kind: type[MeshSettings], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as raised:
        kind()

    field = variable.removeprefix(str(kind.model_config.get("env_prefix", "")))
    assert field.lower() in str(raised.value)


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_LOG_LEVEL", "debug")

    assert Settings().log_level == "DEBUG"


def test_empty_url_means_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_REDIS_URL", "")

    assert Settings().redis_url is None


def test_service_addresses_and_trust_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_SERVICE_ADDRESSES", '{"auth_svc": "auth:50051"}')
    monkeypatch.setenv("MESH_TLS", "1")
    monkeypatch.setenv("MESH_STATE_DIR", "/srv/mesh")
    monkeypatch.setenv("MESH_KEK", "not-printed")

    settings = Settings()

    assert settings.service_addresses == {"auth_svc": "auth:50051"}
    assert settings.tls is True
    assert settings.resolved_keys_dir == Path("/srv/mesh/keys")
    assert settings.resolved_certs_dir == Path("/srv/mesh/certs")
    assert "not-printed" not in repr(settings)

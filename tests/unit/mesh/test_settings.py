from pathlib import Path

import pytest
from pydantic import ValidationError

from mesh.settings import Settings


def test_reads_mesh_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_DATABASE_URL", "postgresql://u@db:5432/x")
    monkeypatch.setenv("MESH_REDIS_URL", "redis://cache:6379/1")
    monkeypatch.setenv("MESH_EDGE_PORT", "9090")
    monkeypatch.setenv("MESH_STATE_DIR", "/srv/mesh")

    settings = Settings()

    assert settings.database_url == "postgresql://u@db:5432/x"
    assert settings.redis_url == "redis://cache:6379/1"
    assert settings.edge_port == 9090
    assert settings.state_dir == Path("/srv/mesh")


def test_defaults_run_everything_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MESH_DATABASE_URL", "MESH_REDIS_URL", "MESH_SMTP_URL", "MESH_EDGE_PORT", "MESH_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)

    settings = Settings()

    assert (settings.database_url, settings.redis_url, settings.smtp_url) == (None, None, None)
    assert settings.edge_port == 8080
    assert settings.state_dir == Path(".mesh")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MESH_DATABASE_URL", "mysql://db/x"),
        ("MESH_REDIS_URL", "http://cache"),
        ("MESH_SMTP_URL", "imap://mail"),
        ("MESH_EDGE_PORT", "70000"),
        ("MESH_LOG_LEVEL", "LOUD"),
        ("MESH_GRACE_PERIOD", "0"),
        ("MESH_AUTH_RESET_URL", "javascript:alert(1)"),
        ("MESH_AUTH_SIGN_IN_URL", "https://"),
        ("MESH_AUTH_ARGON2_MEMORY_KIB", "4096"),
    ],
)
def test_rejects_bad_values(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as raised:
        Settings()

    assert variable.removeprefix("MESH_").lower() in str(raised.value)


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


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text()

    undocumented = [name for name in Settings.model_fields if f"| `MESH_{name.upper()}` |" not in readme]

    assert undocumented == []

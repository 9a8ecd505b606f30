import json

import pytest
import structlog

from mesh.logs import REDACTED, configure_logging, redact_secrets


@pytest.mark.parametrize(
    "key", ["password", "new_password", "refresh_token", "invite_code", "code", "signature", "authorization", "kek"]
)
def test_secret_keys_are_redacted(key: str) -> None:
    assert redact_secrets(None, "info", {key: "s3cret"})[key] == REDACTED


@pytest.mark.parametrize("key", ["email_domain", "status", "method", "request_id", "codes_minted"])
def test_ordinary_keys_are_kept(key: str) -> None:
    assert redact_secrets(None, "info", {key: "visible"})[key] == "visible"


def test_configured_logs_are_json_with_context_and_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test_svc", "INFO")
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        structlog.get_logger().info("registered", password="hunter2hunter2", email_domain="example.com")

    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["event"] == "registered"
    assert event["request_id"] == "r-1"
    assert event["service"] == "test_svc"
    assert event["password"] == REDACTED
    assert "hunter2" not in line

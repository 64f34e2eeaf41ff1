"""PROVIDER_WEBHOOKS and its settings: off by default; on, the fal submit carries {PUBLIC_URL}/webhooks/fal."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from server.settings import Settings, SettingsError
from server.webhook_fal import DEFAULT_JWKS_URL

SECRET = "whsec_" + base64.b64encode(b"s" * 24).decode()
PRODUCTION = {"PORTRAITS_ENV": "production", "JWT_SECRET": "x" * 40, "DATABASE_URL": "postgresql://db/portraits"}


def read(tmp_path: Path, **environ: str) -> Settings:
    return Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "FAL_KEY": "k", **environ})


def test_webhooks_are_off_by_default_and_fal_polls_at_its_interval(tmp_path: Path) -> None:
    """Given no webhook settings, then no route is served and fal submits carry no webhook."""
    settings = read(tmp_path)

    assert settings.webhooks.enabled is False
    assert settings.generation.fal is not None
    assert settings.generation.fal.webhook_url is None
    assert settings.generation.fal.status_interval == settings.generation.fal.poll_interval


def test_webhooks_on_give_fal_the_public_url_and_slow_its_polls(tmp_path: Path) -> None:
    """Given PROVIDER_WEBHOOKS=on and a PUBLIC_URL, then fal calls back there and polls five times less often."""
    settings = read(tmp_path, PROVIDER_WEBHOOKS="on", PUBLIC_URL="https://api.example.com/", FAL_POLL_SECONDS="2")

    fal = settings.generation.fal
    assert fal is not None
    assert fal.webhook_url == "https://api.example.com/webhooks/fal"
    assert fal.status_interval == 10.0
    assert settings.webhooks.fal_jwks_url == DEFAULT_JWKS_URL
    assert settings.webhooks.tolerance_seconds == 300.0
    assert settings.webhooks.replicate_secret is None


def test_the_webhook_knobs_are_read(tmp_path: Path) -> None:
    """Given every webhook variable, then each lands where it is used (and the secret stays out of repr)."""
    settings = read(
        tmp_path,
        PROVIDER_WEBHOOKS="on",
        PUBLIC_URL="http://127.0.0.1:8000",
        FAL_WEBHOOK_JWKS_URL="http://127.0.0.1:9000/jwks.json",
        FAL_WEBHOOK_JWKS_MIN_REFRESH_SECONDS="5",
        REPLICATE_WEBHOOK_SECRET=SECRET,
        PROVIDER_WEBHOOK_TOLERANCE_SECONDS="60",
        PROVIDER_WEBHOOK_MAX_BODY_BYTES="4096",
        PROVIDER_WEBHOOK_POLL_FACTOR="3",
    )

    hooks = settings.webhooks
    assert (hooks.fal_jwks_url, hooks.fal_jwks_min_refresh_seconds) == ("http://127.0.0.1:9000/jwks.json", 5.0)
    assert (hooks.replicate_secret, hooks.tolerance_seconds, hooks.max_body_bytes) == (SECRET, 60.0, 4096)
    assert settings.generation.fal is not None and settings.generation.fal.webhook_poll_factor == 3.0
    assert SECRET not in repr(settings)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({**PRODUCTION, "PROVIDER_WEBHOOKS": "on", "PUBLIC_URL": "http://api.example.com"}, "PUBLIC_URL"),
        ({**PRODUCTION, "PROVIDER_WEBHOOKS": "on", "PUBLIC_URL": "https://api.example.com",
          "FAL_WEBHOOK_JWKS_URL": "http://keys.example.com/jwks.json"}, "FAL_WEBHOOK_JWKS_URL"),
        ({"PROVIDER_WEBHOOKS": "on", "PUBLIC_URL": "ftp://api.example.com"}, "PUBLIC_URL"),
        ({"PROVIDER_WEBHOOKS": "maybe"}, "PROVIDER_WEBHOOKS"),
        ({"REPLICATE_WEBHOOK_SECRET": "whsec_***"}, "REPLICATE_WEBHOOK_SECRET"),
        ({"PROVIDER_WEBHOOK_POLL_FACTOR": "0.5"}, "PROVIDER_WEBHOOK_POLL_FACTOR"),
    ],
)
def test_bad_webhook_settings_say_what_to_fix(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    """Given a webhook setting that cannot work, then the start fails naming it."""
    with pytest.raises(SettingsError, match=message):
        read(tmp_path, **environ)


def test_production_accepts_an_https_public_url(tmp_path: Path) -> None:
    """Given production with an https PUBLIC_URL, then webhooks are on."""
    settings = read(tmp_path, **PRODUCTION, PROVIDER_WEBHOOKS="on", PUBLIC_URL="https://api.example.com")

    assert settings.webhooks.enabled is True


def test_replicate_is_given_its_webhook_only_with_the_signing_secret(tmp_path: Path) -> None:
    """Given webhooks on and a Replicate token, then predictions carry {PUBLIC_URL}/webhooks/replicate when the
    signing secret is set, and the start fails without it (the route could verify nothing)."""
    environ = {"PROVIDER_WEBHOOKS": "on", "PUBLIC_URL": "https://api.example.com", "REPLICATE_API_TOKEN": "r8_x"}

    settings = read(tmp_path, **environ, REPLICATE_WEBHOOK_SECRET=SECRET)

    replicate = settings.generation.replicate
    assert replicate is not None
    assert replicate.webhook_url == "https://api.example.com/webhooks/replicate"
    assert replicate.status_interval == 5 * replicate.poll_interval
    with pytest.raises(SettingsError, match="REPLICATE_WEBHOOK_SECRET"):
        read(tmp_path, **environ)
    off = read(tmp_path, REPLICATE_API_TOKEN="r8_x").generation.replicate
    assert off is not None and off.webhook_url is None

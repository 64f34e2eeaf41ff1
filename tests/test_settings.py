"""Settings: read from a mapping once; the development secret is made once and kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph.settings import Settings, SettingsError


def test_defaults_need_no_configuration(tmp_path: Path) -> None:
    settings = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)})

    assert (settings.host, settings.port, settings.public_url) == ("127.0.0.1", 8000, "http://127.0.0.1:8000")
    assert settings.database_url is None
    assert settings.environment == "development"
    assert settings.graphiql is True


def test_the_development_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).jwt_secret
    second = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path)}).jwt_secret

    assert first == second
    assert len(first) >= 40
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_jwt_secret_from_the_environment_wins(tmp_path: Path) -> None:
    settings = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "JWT_SECRET": "s3cret"})

    assert settings.jwt_secret == "s3cret"
    assert not (tmp_path / "jwt-secret").exists()


@pytest.mark.parametrize(
    "environ,message",
    [
        ({"PORTRAITS_ENV": "production", "DATABASE_URL": "postgresql://x/y"}, "needs JWT_SECRET"),
        ({"PORTRAITS_ENV": "production", "DATABASE_URL": "postgresql://x/y", "JWT_SECRET": "short"}, "at least 32"),
        ({"PORTRAITS_ENV": "production", "JWT_SECRET": "x" * 40}, "needs DATABASE_URL"),
        ({"PORTRAITS_ENV": "staging"}, "PORTRAITS_ENV must be"),
        ({"PORT": "eighty"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be between"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL must be one of"),
        ({"GRAPHIQL": "maybe"}, "GRAPHIQL must be true or false"),
    ],
)
def test_bad_settings_say_what_to_fix(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), **environ})


def test_public_url_follows_host_and_port_unless_set(tmp_path: Path) -> None:
    wildcard = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "HOST": "0.0.0.0", "PORT": "9000"})
    explicit = Settings.from_environ({"PORTRAITS_DATA_DIR": str(tmp_path), "PUBLIC_URL": "https://api.example.com/"})

    assert wildcard.public_url == "http://127.0.0.1:9000"
    assert explicit.public_url == "https://api.example.com"

"""Settings: defaults < TOML < environment < flags, and the combinations that are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.config import ConfigError, load_settings, to_sqlalchemy_url


def test_precedence_toml_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "authgate.toml"
    cfg.write_text('port = 9100\nregistration = "token"\nscopes = ["a", "b", "offline_access"]\n'
                   'default_scopes = ["a"]\naccess_token_ttl = 300\n')
    s = load_settings(cfg, env={})
    assert (s.port, s.registration, s.scopes, s.access_token_ttl) == (9100, "token", ("a", "b", "offline_access"), 300)
    s = load_settings(cfg, env={"AUTHGATE_PORT": "9200", "AUTHGATE_ACCESS_TOKEN_TTL": "120"})
    assert (s.port, s.access_token_ttl) == (9200, 120)
    s = load_settings(cfg, env={"AUTHGATE_PORT": "9200"}, port=9300)
    assert s.port == 9300 and s.issuer_url == "http://127.0.0.1:9300"


def test_config_file_from_env_and_section(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[authgate]\nissuer = "https://auth.example.com"\nhost = "0.0.0.0"\n')
    s = load_settings(env={"AUTHGATE_CONFIG": str(cfg)})
    assert s.issuer_url == "https://auth.example.com"


@pytest.mark.parametrize(("values", "message"), [
    ({"issuer": "https://auth.example.com/"}, "trailing slash"),
    ({"issuer": "http://auth.example.com"}, "https"),
    ({"issuer": "ftp://x"}, "absolute http"),
    ({"host": "0.0.0.0", "auto_approve": True}, "loopback"),
    ({"registration": "maybe"}, "registration"),
    ({"code_ttl": 0}, "positive"),
    ({"default_scopes": ("nope",)}, "subset"),
    ({"port": "eighty"}, "integer"),
    ({"auto_approve": "perhaps"}, "boolean"),
    ({"colour": "blue"}, "unknown setting"),
])
def test_refused_settings(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, **values)


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", env={})


def test_database_urls() -> None:
    assert to_sqlalchemy_url("sqlite:////var/lib/a.db") == "sqlite+aiosqlite:////var/lib/a.db"
    assert to_sqlalchemy_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert to_sqlalchemy_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    s = load_settings(env={}, data_dir="/tmp/x")
    assert s.sqlalchemy_url == "sqlite+aiosqlite:////tmp/x/authgate.db"

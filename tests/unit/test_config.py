from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowdeck.config import Settings, load_settings
from flowdeck.errors import ConfigError


def test_defaults_are_the_embedded_setup() -> None:
    s = load_settings()
    assert (s.host, s.port, s.registration) == ("127.0.0.1", 8080, "approval")
    assert s.resolved_database_url.startswith("sqlite:///")
    assert s.resolved_database_url.endswith("flowdeck-data/flowdeck.db")


def test_environment_beats_toml_and_options_beat_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "flowdeck.toml"
    toml.write_text('port = 9000\nregistration = "closed"\nhost = "0.0.0.0"\n')
    monkeypatch.setenv("FLOWDECK_PORT", "9100")
    s = load_settings(toml)
    assert (s.port, s.registration, s.host) == (9100, "closed", "0.0.0.0")
    assert load_settings(toml, port="9200").port == 9200


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("login_max_failures = 3\n")
    monkeypatch.setenv("FLOWDECK_CONFIG", str(toml))
    assert load_settings().login_max_failures == 3


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("FLOWDECK_PORT", "eighty", "invalid setting port (FLOWDECK_PORT, --port)"),
        ("FLOWDECK_PORT", "70000", "invalid setting port"),
        ("FLOWDECK_REGISTRATION", "sometimes", "invalid setting registration"),
        ("FLOWDECK_ARGON2_MEMORY_KIB", "1024", "invalid setting argon2_memory_kib"),
        ("FLOWDECK_ARGON2_TIME_COST", "1", "invalid setting argon2_time_cost"),
        ("FLOWDECK_AUTO_MIGRATE", "perhaps", "invalid setting auto_migrate"),
    ],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, named: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
        load_settings()


def test_unknown_key_in_toml_is_named(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting prot"):
        load_settings(toml)


def test_malformed_or_missing_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "missing.toml")


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="tls_cert and tls_key must be given together"):
        load_settings(tls_cert=str(cert))


def test_admin_password_file(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("a very long passphrase\n")
    s = load_settings(admin_username="root", admin_password_file=str(f))
    assert s.first_admin_password() == "a very long passphrase"
    assert "passphrase" not in repr(load_settings(admin_password="a very long passphrase"))


def test_every_setting_has_a_description() -> None:
    assert all(f.description for f in Settings.model_fields.values())


def test_a_relative_data_dir_is_made_absolute_once(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, data_dir=Path("rel/data"))
    assert s.data_dir == tmp_path / "rel" / "data" and s.data_dir.is_absolute()
    assert load_settings(None, data_dir=Path("~/d")).data_dir == Path.home() / "d"

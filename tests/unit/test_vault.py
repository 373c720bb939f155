"""Encryption at rest (security/vault.py) and the masking of step logs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from flowdeck.domain.secrets import mask
from flowdeck.errors import ConfigError
from flowdeck.runtime import step_secrets
from flowdeck.runtime.step_secrets import mask_file
from flowdeck.security.vault import SecretUnreadable, Vault, create_key_file, read_keys


def test_the_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret.key"
    assert create_key_file(path) is True
    first = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert create_key_file(path) is False
    assert path.read_bytes() == first
    assert len(read_keys(path)) == 1
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # no temporary left


def test_the_first_key_encrypts_and_every_key_decrypts(tmp_path: Path) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = Vault([old]).encrypt("s3cret")
    assert "s3cret" not in token
    both = Vault([new, old])
    assert both.decrypt(token) == "s3cret"
    rotated = both.rotate(token)
    assert Vault([new]).decrypt(rotated) == "s3cret"
    with pytest.raises(SecretUnreadable):
        Vault([new]).decrypt(token)


def test_a_bad_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("\n\n")
    with pytest.raises(ConfigError, match="holds no key"):
        read_keys(path)
    path.write_text(Fernet.generate_key().decode() + "\nnot-a-key\n")
    with pytest.raises(ConfigError, match="key 2 is not a Fernet key"):
        read_keys(path)


def test_masking_replaces_exact_values_longest_first() -> None:
    assert mask("a tok and tok2 and token", ["tok", "token"]) == "a *** and ***2 and ***"
    assert mask("nothing", ["", "x"]) == "nothing"


def test_a_log_is_masked_across_chunk_boundaries_and_atomically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(step_secrets, "CHUNK", 7)  # values straddle many chunk ends
    value = "SECRET-value"
    text = "".join(f"line {i}: {value}\n" if i % 3 else f"plain {i}\n" for i in range(50))
    log = tmp_path / "stdout.log"
    log.write_text(text)
    log.chmod(0o640)
    assert mask_file(log, [value, "plain 4"]) is True
    got = log.read_text()
    assert value not in got and got == text.replace(value, "***").replace("plain 4", "***")
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert mask_file(log, [value]) is False  # nothing left: the file stays as it is
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdout.log"]

"""The key that encrypts upstream credentials at rest, the Credentials app's environment, and the admin token."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from eventsourcing.cryptography import AESCipher


def secret_key(data_dir: str | Path, configured: str = "") -> str:
    """The configured key, else the one generated into data_dir/secret.key at first start."""
    if configured:
        return configured
    path = Path(data_dir) / "secret.key"
    if path.exists():
        return path.read_text().strip()
    key = AESCipher.create_key(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 0600 from creation: the key is never readable by others, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def credentials_env(data_dir: str | Path, key: str) -> dict[str, str]:
    root = Path(data_dir).absolute()
    return {"CREDENTIALS_SQLITE_DBNAME": str(root / "credentials.db"), **cipher_env(key)}


def cipher_env(key: str) -> dict[str, str]:
    """Encrypts the Credentials app's event state, whichever database holds it."""
    return {"CREDENTIALS_CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher", "CREDENTIALS_CIPHER_KEY": key}


def admin_token(data_dir: str | Path, configured: str = "") -> tuple[str, bool]:
    """(token, generated now): the configured admin API token, else data_dir/admin.token, made at first start."""
    if configured:
        return configured, False
    path = Path(data_dir) / "admin.token"
    if path.exists():
        return path.read_text().strip(), False
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # as secret.key: never readable by others
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token, True

"""The key that encrypts upstream credentials at rest, the Credentials app's environment, the admin token,
and the private data directory that holds them (and the audit, which records client addresses)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from eventsourcing.cryptography import AESCipher

from domain.robot import new_token

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | Path) -> Path:
    """Create `path` (and parents) readable by this user only; an existing one of ours loses group/other access."""
    path = Path(path)
    path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 and path.stat().st_uid == os.getuid():
        path.chmod(mode & ~0o077)
        log.info("%s was readable by others (%o): now %o", path, mode, mode & ~0o077)
    return path


def private_file(path: str | Path) -> Path:
    """Create `path` empty and 0600 if missing (SQLite then gives its -wal and -shm files the same mode)."""
    path = Path(path)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077 and path.stat().st_uid == os.getuid():
            path.chmod(PRIVATE_FILE)
    return path


def secret_key(data_dir: str | Path, configured: str = "") -> str:
    """The configured key, else the one generated into data_dir/secret.key at first start."""
    if configured:
        return configured
    path = Path(data_dir) / "secret.key"
    if path.exists():
        return path.read_text().strip()
    key = AESCipher.create_key(32)
    private_dir(path.parent)
    # 0600 from creation: the key is never readable by others, not even for a moment
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")
    return key


def credentials_env(data_dir: str | Path, key: str) -> dict[str, str]:
    root = private_dir(Path(data_dir).absolute())
    return {"CREDENTIALS_SQLITE_DBNAME": str(private_file(root / "credentials.db")), **cipher_env(key)}


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
    token = new_token()
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # as secret.key: never readable by others
    with os.fdopen(fd, "w") as file:
        file.write(token + "\n")
    return token, True

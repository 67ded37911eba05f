"""A real `entrepot serve` process on a loopback port, configured by a TOML file it writes itself."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from domain.org_settings import OrgSettings
from tests.support.processes import OnLoopback

REPO_ROOT = Path(__file__).resolve().parents[2]

ORG_KEYS = ("name", *OrgSettings.__struct_fields__, "password")   # every setting, as declared in the domain


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string (ASCII-escaped) is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as a TOML value")


def render_config(host: str, port: int, data_dir: Path, organizations: list[dict], log_level: str = "info",
                  sections: dict[str, dict] | None = None, server: dict | None = None) -> str:
    lines = ["[server]", f"host = {_toml_value(host)}", f"port = {port}", f"data_dir = {_toml_value(str(data_dir))}",
             f"log_level = {_toml_value(log_level)}"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in (server or {}).items()]  # e.g. {"engine": "granian"}
    lines.append("")
    for org in organizations:
        unknown = set(org) - set(ORG_KEYS)
        if unknown:
            raise ValueError(f"unknown organization key(s): {', '.join(sorted(unknown))}")
        lines.append("[[organizations]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in org.items() if value is not None]
        lines.append("")
    for section, values in (sections or {}).items():  # e.g. {"upstream": {"read_timeout": 1}}
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


# What serve prints once it listens, with the port it got (port 0 asks for any free one).
SERVING_LINE = re.compile(r"Entrepôt serving on http://[^\s]+:(\d+) ")


class EntrepotServer(OnLoopback):
    """One `python -m interfaces.cli serve` process; stop()/kill() and start() again keep port and data dir.

    Without a port it starts on port 0 and learns the port from serve's "serving on" line: no free
    port is guessed beforehand (another process could take it between the guess and the bind).
    """

    def __init__(self, directory: Path | str, organizations: list[dict], port: int | None = None,
                 startup_timeout: float = 60.0, access_log: bool = False, env: dict | None = None,
                 sections: dict[str, dict] | None = None, server: dict | None = None,
                 checkout: Path | None = None, python: str | None = None) -> None:
        self.directory = Path(directory)
        # Which code runs: this checkout by default; bench/ab.py runs another revision's worktree and venv.
        self.checkout = Path(checkout) if checkout else REPO_ROOT
        self.python = python or sys.executable
        self.directory.mkdir(parents=True, exist_ok=True)
        self.organizations = [dict(org) for org in organizations]
        self.port = port or 0     # the real port once started
        self.data_dir = self.directory / "data"
        self.config_path = self.directory / "entrepot.toml"
        self.log_path = self.directory / "entrepot.log"
        self.startup_timeout = startup_timeout
        self.access_log = access_log
        self.env = env
        self.sections = sections or {}
        self.server = server or {}    # more [server] keys, e.g. {"engine": "granian"}
        self.process: subprocess.Popen | None = None
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(render_config("127.0.0.1", self.port, self.data_dir, self.organizations,
                                                  sections=self.sections, server=self.server))

    def command(self, *args: str) -> list[str]:
        """An `entrepot` CLI command line against this server's config, e.g. command("projections", "status")."""
        return [self.python, "-m", "interfaces.cli", *args, "--config", str(self.config_path)]

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=self.checkout, capture_output=True, text=True, timeout=timeout,
                              env=self._env())

    def _env(self) -> dict:
        env = dict(os.environ)
        env.pop("ENTREPOT_CONFIG", None)
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        return env

    def start(self) -> EntrepotServer:
        if self.running:
            return self
        command = self.command("serve") + (["--access-log"] if self.access_log else [])
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== starting: {' '.join(command)}\n".encode())
            log.flush()
            started_at = log.tell()
            self.process = subprocess.Popen(command, cwd=self.checkout, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self._env())
        self._wait_until_up(started_at)
        return self

    def _wait_until_up(self, log_offset: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"entrepot serve exited with {code} before answering:\n{self.log_tail()}")
            port = self._serving_port(log_offset)
            if port is not None:
                if port != self.port:
                    self.port = port
                    self.write_config()   # a restart (and the CLI) uses the port this run got
                try:
                    # 401: the challenge of a server with a protected org (anonymous_pull = false) is an answer too
                    if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                        self._wait_for_access_line(log_offset)
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"entrepot serve did not say it serves (and answer 200 on /v2/) within "
                           f"{self.startup_timeout}s:\n{self.log_tail()}")

    def _wait_for_access_line(self, log_offset: int, timeout: float = 5.0) -> None:
        """With --access-log, the line of our own GET /v2/ is written just after its reply: wait for it,
        so that a test reading the log from now on does not see it as one of its own requests."""
        deadline = time.monotonic() + timeout
        while self.access_log and time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(log_offset)
                if b'"GET /v2/ HTTP/1.1" 200' in log.read():
                    return
            time.sleep(0.01)

    def _serving_port(self, log_offset: int) -> int | None:
        with open(self.log_path, "rb") as log:
            log.seek(log_offset)
            match = SERVING_LINE.search(log.read().decode(errors="replace"))
        return int(match[1]) if match else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code (None when it was not running)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        return process.returncode

    def kill(self) -> int | None:
        """SIGKILL, as a crash would; returns the exit code (None when it was not running)."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        return process.returncode

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> EntrepotServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

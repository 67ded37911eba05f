"""The real pulling clients (skopeo, podman) as the e2e tests drive them, isolated from the host's config.

podman as root in this sandbox (Debian 12, podman 4.3): a private store per test with `--root/--runroot`, the
`vfs` driver (no overlay mounts needed), a runroot of at most 50 characters (podman refuses longer ones), `--cgroup-manager cgroupfs` and `--events-backend file` (no systemd or
journald), a private `--tmpdir` and `TMPDIR`, and `CONTAINERS_STORAGE_CONF` pointing at a storage.conf of our own so
a host /etc/containers/storage.conf (overlay options, mount_program) cannot interfere. `pull --tls-verify=false`
talks plain http to a loopback cache; through a mirror, `insecure = true` in registries.conf does the same.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CLIENT_TIMEOUT = 120


def write_registries_conf(path: Path | str, mirror: str, prefix: str = "docker.io") -> Path:
    """A registries.conf mirroring `prefix` to `mirror` (e.g. "127.0.0.1:PORT/hub") over plain http.

    The primary location is 127.0.0.1:1 (nothing listens there), so a failing mirror never falls back to the
    real registry: with docker.io as location, containers/image would try Docker Hub.
    """
    path = Path(path)
    path.write_text(
        'unqualified-search-registries = []\n'
        'short-name-mode = "disabled"\n'
        "\n"
        "[[registry]]\n"
        f'prefix = "{prefix}"\n'
        'location = "127.0.0.1:1"\n'
        "\n"
        "[[registry.mirror]]\n"
        f'location = "{mirror}"\n'
        "insecure = true\n"
    )
    return path


def run(command: list[str], env: dict | None = None, timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess:
    """Run a client; raise with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                            stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited with {result.returncode}\n"
                             f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    return result


# ---------------------------------------------------------------------------------------------------- skopeo


def skopeo_copy_command(source: str, destination: Path | str, *, all_images: bool = False,
                        registries_conf: Path | str | None = None, tls_verify: bool = False) -> list[str]:
    Path(destination).parent.mkdir(parents=True, exist_ok=True)   # skopeo creates the directory, not its parent
    command = ["skopeo"]
    if registries_conf is not None:
        command += ["--registries-conf", str(registries_conf)]  # a hidden global flag, before the subcommand
    command += ["copy", "--retry-times", "0"]
    if not tls_verify:
        command.append("--src-tls-verify=false")
    if all_images:
        command.append("--all")
    return command + [source, f"dir:{destination}"]


def skopeo_copy(source: str, destination: Path | str, **options) -> subprocess.CompletedProcess:
    return run(skopeo_copy_command(source, destination, **options))


@dataclass(frozen=True)
class DirImage:
    """What `skopeo copy ... dir:D` wrote: the top manifest, per-instance manifests (--all) and blobs, as bytes."""

    manifest: bytes
    instances: dict[str, bytes]     # "sha256:<hex>" -> manifest bytes (only with --all on an index)
    blobs: dict[str, bytes]         # "sha256:<hex>" -> blob bytes

    @classmethod
    def read(cls, directory: Path | str) -> DirImage:
        directory = Path(directory)
        instances, blobs = {}, {}
        for path in directory.iterdir():
            if path.name.endswith(".manifest.json"):
                instances["sha256:" + path.name.removesuffix(".manifest.json")] = path.read_bytes()
            elif len(path.name) == 64 and all(c in "0123456789abcdef" for c in path.name):
                blobs["sha256:" + path.name] = path.read_bytes()
        return cls((directory / "manifest.json").read_bytes(), instances, blobs)


# ---------------------------------------------------------------------------------------------------- podman


class Podman:
    """podman as root with a private vfs store under `directory`; see the module docstring for the flags."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.root = self.directory / "root"
        # podman refuses a runroot longer than 50 characters (it holds sockets), so it lives in /tmp; close()
        # removes it.
        self.runroot = Path(tempfile.mkdtemp(prefix="podman-run-", dir="/tmp"))
        self.tmpdir = self.directory / "tmp"
        for path in (self.root, self.runroot, self.tmpdir):
            path.mkdir(parents=True, exist_ok=True)
        self.storage_conf = self.directory / "storage.conf"
        self.storage_conf.write_text(
            "[storage]\n"
            'driver = "vfs"\n'
            f'graphroot = "{self.root}"\n'
            f'runroot = "{self.runroot}"\n'
        )
        # An empty registries.conf unless a pull asks for a mirror: the host's search registries never apply.
        self.registries_conf = self.directory / "registries.conf"
        self.registries_conf.write_text('unqualified-search-registries = []\nshort-name-mode = "disabled"\n')

    def close(self) -> None:
        shutil.rmtree(self.runroot, ignore_errors=True)

    def __enter__(self) -> Podman:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def env(self, registries_conf: Path | str | None = None) -> dict:
        env = dict(os.environ)
        env["CONTAINERS_STORAGE_CONF"] = str(self.storage_conf)
        env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf or self.registries_conf)
        env["TMPDIR"] = str(self.tmpdir)
        return env

    def command(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.root), "--runroot", str(self.runroot), "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--tmpdir", str(self.tmpdir), *args]

    def __call__(self, *args: str, registries_conf: Path | str | None = None) -> subprocess.CompletedProcess:
        return run(self.command(*args), env=self.env(registries_conf))

    def pull(self, reference: str, *, tls_verify: bool = False,
             registries_conf: Path | str | None = None) -> subprocess.CompletedProcess:
        flags = [] if tls_verify else ["--tls-verify=false"]
        return self("pull", "--quiet", *flags, reference, registries_conf=registries_conf)

    def image_digests(self, reference: str) -> set[str]:
        """The manifest digests podman recorded for an image: its Digest and those in its RepoDigests."""
        info = json.loads(self("image", "inspect", reference).stdout)[0]
        digests = {info.get("Digest", "")}
        digests |= {repo_digest.rpartition("@")[2] for repo_digest in info.get("RepoDigests") or []}
        return {digest for digest in digests if digest}

    def listed_digests(self) -> dict[str, str]:
        """`podman images --digests`: "repository:tag" -> digest."""
        out = self("images", "--digests", "--format", "{{.Repository}}:{{.Tag}} {{.Digest}}").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

"""A private containerd daemon (unix socket only, CRI off, native snapshotter) and `ctr` pulls through hosts.toml.

Its root, state and socket live in one temporary directory under /tmp (a unix socket path must stay under
108 bytes); nothing of the host's containerd is touched. ctr talks to it with --address.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.clients import run
from tests.support.processes import stop_process

# Everything a pull does not need: no Kubernetes (CRI), and no snapshotter that needs kernel or disk support.
DISABLED_PLUGINS = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs"]


def write_hosts_toml(hosts_dir: Path | str, registry: str, mirror_url: str, override_path: bool = False) -> Path:
    """hosts_dir/<registry>/hosts.toml sending pulls of `registry` to `mirror_url`.

    The fallback `server` is 127.0.0.1:1 (nothing listens there): a failing mirror fails the pull
    instead of quietly going to the real registry.
    """
    directory = Path(hosts_dir) / registry
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hosts.toml"
    path.write_text(
        'server = "http://127.0.0.1:1"\n'
        "\n"
        f'[host."{mirror_url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        + ("  override_path = true\n" if override_path else "")
    )
    return path


class Containerd:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
        self.socket = self.directory / "c.sock"
        self.config = self.directory / "config.toml"
        self.log_path = self.directory / "containerd.log"
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.directory / "root"}"\n'
            f'state = "{self.directory / "state"}"\n'
            f"disabled_plugins = {DISABLED_PLUGINS!r}\n".replace("'", '"')
            + f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n'
            '[metrics]\n  address = ""\n'
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> Containerd:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["containerd", "--config", str(self.config)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while subprocess.run(self.ctr("version"), capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"containerd did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process, grace=10)
        shutil.rmtree(self.directory, ignore_errors=True)

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.socket), *args]

    def pull(self, reference: str, hosts_dir: Path | str, namespace: str = "entrepot-test") -> subprocess.CompletedProcess:
        """Pull and unpack (native snapshotter), resolving `reference`'s registry through hosts_dir."""
        return run(self.ctr("--namespace", namespace, "images", "pull", "--hosts-dir", str(hosts_dir),
                            "--plain-http", "--snapshotter", "native", reference))

    def image_digest(self, reference: str, namespace: str = "entrepot-test") -> str:
        """The manifest (or index) digest containerd recorded for `reference`."""
        out = run(self.ctr("--namespace", namespace, "images", "list")).stdout
        for line in out.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == reference:
                return fields[2]
        raise AssertionError(f"{reference} not in ctr images list:\n{out}")

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

"""`python -m bench.nginx_sendfile`: how nginx's send settings move one stream of a 100 MiB file over loopback.

    .venv/bin/python -m bench.nginx_sendfile --rounds 6

Why infra/deploy/nginx/nginx.conf sends blobs with `aio threads` and `sendfile_max_chunk 512k`: one nginx
per variant serves the same file statically, and curl fetches it from each in turn (two transfers per
round); medians per variant, the load average next to them, JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import machine
from tests.support.registry import free_port

VARIANTS = {
    "sendfile (worker)": "sendfile on;",
    "sendfile, max chunk 512k": "sendfile on; sendfile_max_chunk 512k;",
    "no sendfile, 2 x 1m buffers": "sendfile off; output_buffers 2 1m;",
    "aio threads + sendfile, max chunk 256k": "sendfile on; aio threads; sendfile_max_chunk 256k;",
    "aio threads + sendfile, max chunk 512k (deployed)": "sendfile on; aio threads; sendfile_max_chunk 512k;",
}


def config(directory: Path, port: int, settings: str, files: Path) -> str:
    return (f"user root; worker_processes auto; pid {directory}/nginx.pid; error_log stderr warn;\n"
            "events { worker_connections 1024; }\n"
            f"http {{ access_log off; client_body_temp_path {directory}/cb; proxy_temp_path {directory}/p;\n"
            f"  fastcgi_temp_path {directory}/f; uwsgi_temp_path {directory}/u; scgi_temp_path {directory}/s;\n"
            f"  tcp_nopush on; {settings}\n"
            f"  server {{ listen 127.0.0.1:{port}; location /b/ {{ alias {files}/; }} }} }}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nginx_sendfile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--mib", type=int, default=100)
    o = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="entrepot-nginx-sendfile-"))
    load_before = machine.load()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    try:
        (work / "files").mkdir()
        with open(work / "files" / "blob", "wb") as blob:
            blob.write(os.urandom(o.mib * 2**20))
        for number, (name, settings) in enumerate(VARIANTS.items()):
            directory, port = work / str(number), free_port()
            directory.mkdir()
            (directory / "nginx.conf").write_text(config(directory, port, settings, work / "files"))
            servers[name] = (subprocess.Popen(["nginx", "-p", str(directory), "-c", str(directory / "nginx.conf"),
                                               "-g", "daemon off;"]), port)
        time.sleep(1)
        for _ in range(o.rounds):
            for name, (_, port) in servers.items():
                url = f"http://127.0.0.1:{port}/b/blob"
                out = subprocess.run(["curl", "-s", "-w", "%{speed_download}\n", "-o", "/dev/null", url,
                                      "-o", "/dev/null", url], capture_output=True, text=True, check=True).stdout
                samples[name] += [float(value) / 2**20 for value in out.split()]
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    load_after = machine.load()
    print(f"one stream, {o.mib} MiB over loopback, medians of {2 * o.rounds} transfers "
          f"(load {load_before} -> {load_after}):")
    for name, value in medians.items():
        print(f"{name:<52} {value:8.0f} MiB/s")
    output = Path(__file__).with_name("results") / f"{datetime.date.today()}-nginx-sendfile.json"
    output.write_text(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                  "machine": machine.machine(), "load_before": load_before, "load_after": load_after,
                                  "mib": o.mib, "variants": VARIANTS, "samples_mib_s": samples,
                                  "medians_mib_s": medians}, indent=1) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())

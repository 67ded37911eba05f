"""Run an `entrepot` CLI command inside the test process, answered as subprocess.run would answer it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

from interfaces.cli import main


def run_in_process(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """`python -m interfaces.cli ARGS` without starting an interpreter (about a second each under load).

    The ENTREPOT_* variables are replaced by `env` for the call; stdin, stdout and stderr are strings.
    What only a process shows (the exit status a shell sees, signals) still needs a real subprocess.
    """
    saved = {key: value for key, value in os.environ.items() if key.startswith("ENTREPOT_")}
    saved_stdin = sys.stdin
    out, err = io.StringIO(), io.StringIO()
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    sys.stdin = io.StringIO(stdin or "")
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:   # argparse's usage errors
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)
        sys.stdin = saved_stdin
    return subprocess.CompletedProcess(["entrepot", *args], code, out.getvalue(), err.getvalue())

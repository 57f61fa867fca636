"""The binary's smoke test (build/smoke.py), run from pytest.

Against the binary only when ``LOCALGATE_BINARY`` names one (CI builds it with
build/binary.py and sets it); the same script also runs against
``python -m localgate`` so it cannot rot between builds.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "build" / "smoke.py"

pytestmark = pytest.mark.slow


def run_smoke(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SMOKE), target],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


def test_binary_smoke():
    binary = os.environ.get("LOCALGATE_BINARY")
    if not binary:
        pytest.skip("set LOCALGATE_BINARY to a built binary (python build/binary.py)")
    path = Path(binary)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"LOCALGATE_BINARY={binary} is not an executable file")
    done = run_smoke(str(path.resolve()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke test passed" in done.stdout


def test_smoke_script_on_the_source_install():
    done = run_smoke(shlex.join([sys.executable, "-m", "localgate"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke test passed" in done.stdout

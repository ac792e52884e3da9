"""`nfl-mlops run FLOW` with no Prefect server configured, as a new user first tries it: the run uses a
temporary server, says so once, and a run that succeeds prints no traceback (issue 15, item 8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_without_a_server_is_quiet_and_says_why(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))}
    env.update(
        MLOPS_HOME=str(tmp_path / "home"),
        PREFECT_HOME=str(tmp_path / "prefect"),  # the temporary server's database: this test's own
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deployments.cli",
            "run",
            "monitoring",
            "--params",
            '{"model_name": "cli-quiet"}',
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "no Prefect server is configured" in proc.stderr and "nfl-mlops up" in proc.stderr
    assert "Traceback" not in out, out[-6000:]
    assert "database is locked" not in out
    assert '"status": "skipped"' in proc.stdout, proc.stdout[-2000:]  # nothing to judge: a quick run

"""The soak's shortened run (bench/soak.py --short): the real stack for three simulated days.

A Prefect server with every deployment and automation of `prefect.yaml`, a process worker, two API
replicas on a PostgreSQL database of this session; an ordinary day, then two NFL game days. Faults: the
Prefect server is killed (-9) and started again at the start of day 1, API replica a is killed (-9)
under load on day 3 and started again. The loop must open one drift episode on the first game day,
retrain once for it (through the automation, the worker, the gate and a canary under the live traffic),
and accept the new normal on the second game day; the invariants of the full soak hold.

The soak runs as a subprocess: it sets its own MLOPS_HOME, state DB and Prefect server, and must not
leak them into this test session. Its full 14-day run (more faults) is `bench/soak.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_keeps_its_invariants(postgres_url, tmp_path):
    out = tmp_path / "soak.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "PREFECT_"))}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--short",
            "--database-url",
            postgres_url,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert out.exists(), (
        f"the soak wrote no report (exit {proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    )
    report = json.loads(out.read_text())
    failed = {k: v for k, v in report["invariants"].items() if not v["ok"]}
    assert not failed, f"{failed}\n{proc.stdout[-6000:]}"
    assert proc.returncode == 0, proc.stdout[-6000:]

    # What the invariants rest on happened: the faults, and a drift episode on the first game day whose loop
    # ended with a retrained version promoted by canary under the live traffic. A day's labels (about 130
    # on the drifted window) can leave a good candidate's improvement interval across zero: then the gate
    # rejects it, v1 does not hold on the drift, and the episode closes as unresolved; the second game day
    # opens another, retrained with the labels gathered since (seen on CI). Both are the loop working.
    assert [f["fault"] for f in report["faults"]] == ["server-restart", "replica-kill"]
    episodes = list(report["state"]["episodes"].values())
    assert 1 <= len(episodes) <= 2, episodes
    assert all(e["version"] == 1 and e["status"] == "closed" and e["job"] for e in episodes), episodes
    [promoted] = [e["retrained_version"] for e in episodes if e["retrained_version"] is not None]
    unresolved = [e for e in episodes if e["retrained_version"] is None]
    assert all(e["close_reason"].startswith("unresolved") for e in unresolved), unresolved
    assert report["champions"] == [1, promoted]
    [canary] = [r for r in report["state"]["rollouts"].values() if r["version"] == promoted]
    assert canary["strategy"] == "canary" and "promoted" in [event for event, _ in canary["history"]], canary
    # a load balancer's view of the kill: every request was answered (by the other replica meanwhile)
    assert report["unanswered"] == 0
    runs = sorted(report["state"]["runs"].values(), key=lambda r: r["at"])
    assert len(runs) == 3 and runs[1]["drift"]
    assert runs[2]["version"] == (promoted if len(episodes) == 1 else 1) and not runs[2]["skipped"]

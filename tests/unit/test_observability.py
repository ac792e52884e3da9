"""The operations kit (deployments/observability): Prometheus config and alert rules checked and unit-tested
by the real `promtool` (Debian's `prometheus` package, installed by `.ci/run` / `make ops-tools`), and the
Grafana dashboard checked for structure, PromQL syntax and metric names that the service really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

KIT = Path(__file__).resolve().parents[2] / "deployments" / "observability"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes itself


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs promtool (Debian package prometheus; .ci/run installs it)")
        pytest.skip("promtool not installed (make ops-tools)")
    return path


def _run(*args: str, cwd: Path = KIT) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every series name the service's /metrics exposes once each metric has a value."""
    from prometheus_client import generate_latest

    from nfl_mlops.serving.metrics import ServingMetrics

    m = ServingMetrics()
    m.requests.labels("/mlops/predict/sentiment", "200").inc()
    m.latency.labels("/mlops/predict/sentiment").observe(0.01)
    m.batch_size.observe(4)
    m.batch_seconds.observe(0.02)
    m.predictions.labels("1", "stable", "positive").inc()
    m.shadow_predictions.labels("2").inc()
    m.cache_hits.inc()
    m.cache_misses.inc()
    m.log_queue.set(3)
    m.serving_version.set(1)
    m.set_arms({"stable": {"version": 1, "weight": 90.0}, "canary": {"version": 2, "weight": 10.0}})
    m.rollout_actions.labels("rollback").inc()
    text = generate_latest(m.registry).decode()
    assert 'nfl_mlops_arm_weight{arm="canary",model_version="2"} 10.0' in text
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def _metrics_in(expr: str) -> set[str]:
    names = set(re.findall(r"\b(nfl_mlops_[a-z_]+|up)\b", expr))
    return names - PROMETHEUS_OWN


def test_prometheus_config_and_rules_are_valid(promtool) -> None:
    out = _run(promtool, "check", "config", "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 rule files found" in out.stdout


def test_alert_rules_fire_when_they_should_and_not_before(promtool) -> None:
    out = _run(promtool, "test", "rules", "alerts_test.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    rules = yaml.safe_load((KIT / "alerts.yml").read_text())["groups"][0]["rules"]
    tested = yaml.safe_load((KIT / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tested for t in case["alert_rule_test"] if t.get("exp_alerts")}
    assert fired == {r["alert"] for r in rules}  # every alert has a test in which it fires


def test_a_wrong_expectation_fails_promtool(promtool, tmp_path) -> None:
    """The rule tests can fail: the same tests expecting another threshold's summary do."""
    shutil.copy(KIT / "alerts.yml", tmp_path / "alerts.yml")
    text = (KIT / "alerts_test.yml").read_text().replace("9900 predictions wait", "42 predictions wait")
    (tmp_path / "alerts_test.yml").write_text(text)
    assert _run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path).returncode != 0


def test_alerts_use_metrics_the_service_exports(exported) -> None:
    rules = yaml.safe_load((KIT / "alerts.yml").read_text())["groups"][0]["rules"]
    for rule in rules:
        assert _metrics_in(rule["expr"]) <= exported, rule["alert"]


def test_grafana_dashboard_is_well_formed(exported, promtool, tmp_path) -> None:
    dash = json.loads((KIT / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource"}
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["w"] > 0 and g["h"] > 0, p["title"]
        assert (g["x"], g["y"]) not in cells, p["title"]
        cells.add((g["x"], g["y"]))
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
        for t in p["targets"]:
            assert _metrics_in(t["expr"]) <= exported, (p["title"], t["expr"])
    # the PromQL parses: every panel query as a recording rule that promtool checks
    exprs = [t["expr"].replace("$__rate_interval", "5m") for p in panels for t in p["targets"]]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "dashboard_rules.yml").write_text(yaml.safe_dump(rules))
    out = _run(promtool, "check", "rules", "dashboard_rules.yml", cwd=tmp_path)
    assert out.returncode == 0 and f"{len(exprs)} rules found" in out.stdout, out.stdout + out.stderr
    # the live split and the rollout decisions have panels
    queried = {m for e in exprs for m in _metrics_in(e)}
    assert {
        "nfl_mlops_arm_weight",
        "nfl_mlops_rollout_actions_total",
        "nfl_mlops_prediction_log_queued",
    } <= queried

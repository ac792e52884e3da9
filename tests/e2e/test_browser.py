"""Checked as a person would (issue 15, item 9): a real headless Chromium (Debian's package) opens the Prefect UI
of a stack that has run the pipeline and a monitoring check, and the API's /docs, and finds what a newcomer
needs by name: the runs named for what they did, the automations by name, the model-status artifact, and
the drift report's link, which opens the report itself over HTTP.

Chromium renders each page with a virtual-time budget and dumps the DOM (`--dump-dom`), so the assertions
read what the browser built, after the UI's JavaScript ran; a screenshot of each page is kept as test output
(the test's temporary folder, printed at the end), never in git.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nfl_mlops.modeling.params import DataParams, TrainParams

pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "browser-model"
POOL = "browser-pool"


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI needs Chromium (Debian package chromium; .ci/run installs it with make browser-tools)"
            )
        pytest.skip("needs Chromium: make browser-tools")
    return path


def render(chromium: str, url: str, shot: Path, budget_ms: int = 15000) -> str:
    """The DOM of `url` after its scripts ran (and a screenshot of it at `shot`)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--virtual-time-budget={budget_ms}",
    ]
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [chromium, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", url],
            capture_output=True,
            timeout=120,
        )
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [chromium, *flags, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def render_showing(
    chromium: str, url: str, shot: Path, *needles: str, budget_ms: int = 15000, attempts: int = 4
) -> str:
    """`render`, again with a doubled budget while any of `needles` is missing from the DOM.

    The Prefect UI fetches its lists after its own scripts loaded; on a slow machine one virtual-time budget
    can end before that answer arrived (the DOM is then the empty app shell). The DOM is returned either way,
    so the caller's assertion still fails when the content never shows."""
    budget = budget_ms
    for _ in range(attempts):
        dom = render(chromium, url, shot, budget_ms=budget)
        if all(needle in dom for needle in needles):
            break
        budget *= 2
    return dom


@contextmanager
def ui_server(home: Path) -> Iterator[str]:
    """The Prefect UI over the test server's database: `prefect server start --no-services` on it.

    The session's server (prefect_test_harness) serves the API only (Prefect turns its UI off); a second
    webserver on the same database serves the real UI and an API that reads the same runs, automations and
    artifacts. Stopped by its PID."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=PREFECT_SERVER_DATABASE_CONNECTION_URL.value(),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
    )
    prefect = str(Path(sys.executable).with_name("prefect"))
    cmd = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services", "--ui"]
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the Prefect UI server did not start in 120 s"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def stack(settings, tmp_path_factory):
    """The pipeline (v1 trained, registered, deployed) and one monitoring check with a drift report, the
    retraining deployment with the automations of prefect.yaml, and the API serving v1."""
    import asyncio

    import yaml
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

    from flows.monitoring import monitoring_flow
    from flows.pipeline import pipeline_flow
    from flows.retraining import retraining_flow
    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.settings import get_settings
    from tests.api.helpers import api_settings, start_server
    from tests.served import log_served

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [retraining] = [d for d in spec["deployments"] if d.get("triggers")]
    triggers = [
        DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"}) for t in retraining["triggers"]
    ]

    async def deploy() -> Any:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
        source = await retraining_flow.from_source(
            source=str(ROOT), entrypoint="flows/retraining.py:retraining_flow"
        )
        return await source.deploy(
            name="retraining", work_pool_name=POOL, triggers=triggers, print_next_steps=False
        )

    async def undeploy(deployment_id: Any) -> None:
        """The automations would start retraining runs for every later drift event of the session."""
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.states import Cancelled

        async with get_client() as client:
            for t in triggers:
                for automation in await client.read_automations_by_name(t.name):
                    await client.delete_automation(automation.id)
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
            )
            for run in runs:  # what the drift event of this module started (no worker serves the pool)
                if not (run.state and run.state.is_final()):
                    await client.set_flow_run_state(run.id, Cancelled(), force=True)
            await client.delete_deployment(deployment_id)

    deployment_id = asyncio.run(deploy())
    api = start_server(api_settings(MODEL))
    os.environ["MLOPS_API_URL"] = api.base_url  # report links point at this API
    get_settings.cache_clear()
    try:
        pipeline_flow(
            data=DataParams(topics_exclude=["nfl"], max_train_samples=300, max_eval_samples=150, seed=5),
            train=TrainParams(epochs=1, learning_rate=2e-4, batch_size=32, max_length=48),
            model_name=MODEL,
        )
        info = Registry.from_settings().get(MODEL, 1)
        model = SentimentModel.load(info.path)
        nfl = select(prepare(load_corpus()), topics_include=["nfl"], max_rows=200, seed=2)
        at = datetime.now(UTC)
        texts = nfl["text"].tolist()
        log_served(settings.db_url, MODEL, 1, texts, model.predict(texts), at, "browser", "browser")
        check = monitoring_flow(model_name=MODEL, end=at + timedelta(seconds=1), window_hours=1)
        with ui_server(tmp_path_factory.mktemp("prefect-ui")) as ui:
            yield {
                "ui": ui,
                "api": api.base_url,
                "check": check,
                "shots": tmp_path_factory.mktemp("screenshots"),
            }
    finally:
        os.environ.pop("MLOPS_API_URL", None)
        get_settings.cache_clear()
        api.stop()
        asyncio.run(undeploy(deployment_id))


def latest_artifact(key: str) -> str:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert found, f"no artifact {key!r}"
    return str(max(found, key=lambda a: a.created).id)


def test_a_newcomer_finds_the_story_in_the_prefect_ui_and_the_api_docs(stack, chromium):
    ui, shots = stack["ui"], stack["shots"]

    runs = render_showing(chromium, f"{ui}/runs", shots / "runs.png", f"monitor-{MODEL}", f"train-{MODEL}")
    for name in (
        f"pipeline-{MODEL}-blue_green",
        f"train-{MODEL}",
        f"register-{MODEL}",
        f"deploy-{MODEL}-v1-blue_green",
    ):
        assert name in runs, f"flow run {name!r} not on the runs page"
    assert f"monitor-{MODEL}" in runs

    automations = render_showing(
        chromium, f"{ui}/automations", shots / "automations.png", "retrain-on-drift", "retrain-on-degradation"
    )
    assert "retrain-on-drift" in automations and "retrain-on-degradation" in automations
    assert "A custom trigger" not in automations or "drift episode" in automations  # described, not anonymous

    # the artifact's page (its key's page lists versions; the latest one's page shows its content)
    status = render_showing(
        chromium,
        f"{ui}/artifacts/artifact/{latest_artifact(f'model-status-{MODEL}')}",
        shots / "model-status.png",
        f"{MODEL}: champion v1",
    )
    assert f"{MODEL}: champion v1" in status, status[-3000:]

    report_url = stack["check"]["report_url"]
    report_page = render_showing(
        chromium,
        f"{ui}/artifacts/artifact/{latest_artifact('drift-report-html')}",
        shots / "drift-report-artifact.png",
        report_url,
    )
    assert report_url.startswith(stack["api"] + "/mlops/reports/"), report_url
    assert report_url in report_page, "the drift report's link is not on its artifact page"
    report = render_showing(chromium, report_url, shots / "drift-report.png", MODEL, budget_ms=5000)
    assert MODEL in report and "v1" in report  # the report's header: which model, which version

    # plots where people look: inline in the artifacts (no file of the worker's host needed)
    signals = render_showing(
        chromium,
        f"{ui}/artifacts/artifact/{latest_artifact('drift-signals')}",
        shots / "drift-signals.png",
        "Drift per signal",
    )
    assert "Drift per signal" in signals and '<img src="data:image/png;base64,' in signals, signals[-3000:]
    model_plots = render_showing(
        chromium,
        f"{ui}/artifacts/artifact/{latest_artifact('model-plots')}",
        shots / "model-plots.png",
        "F1 per class beside the TF-IDF baseline",
    )
    assert model_plots.count('<img src="data:image/png;base64,') >= 4  # confusion, reliability, F1, loss
    assert "F1 per class beside the TF-IDF baseline" in model_plots

    docs = render_showing(
        chromium, f"{stack['api']}/docs", shots / "api-docs.png", "/mlops/predict/sentiment", budget_ms=8000
    )
    assert "swagger-ui" in docs and "/mlops/predict/sentiment" in docs, docs[-2000:]
    print(f"\nscreenshots: {shots}")

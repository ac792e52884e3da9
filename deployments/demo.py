"""`make demo` / `nfl-mlops demo`: the whole loop, end to end, on the embedded defaults.

1. start a local Prefect server (SQLite), a process work pool + worker, deploy prefect.yaml, start the API;
2. run the `pipeline` deployment: v1 trained on non-NFL tweets, registered, deployed (blue-green);
3. send NFL tweets through the HTTP API (unlabelled);
4. run the `monitoring` deployment: Evidently finds drift, the drift episode queues the served tweets most
   worth labelling (up to MLOPS_LABELING_BUDGET), `nfl-mlops.drift.detected` goes out; the corpus' labels
   stand in for annotators and label only the queued tweets (Label Studio export -> import);
5. the automation (not this script) starts the `retraining` deployment, which waits for the queue's labels;
   v2 is trained on the same recipe plus the labelled NFL tweets, gated against v1, registered and deployed;
6. send the same NFL tweets to the retrained version and run monitoring again: the accepted new normal
   opens no new drift episode;
7. print a summary and stop everything that was started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

T0 = time.monotonic()
LABEL_WAIT_MINUTES = 10.0
"""How long the demo's retraining waits for the annotators (here the corpus' labels, seconds away)."""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f}s] {msg}", flush=True)


async def wait_flow_run(client: Any, flow_run_id: Any, label: str, timeout: float = 1800) -> Any:
    """Poll a flow run until it is final, printing its state changes and a heartbeat."""
    last_state, last_beat, last_msg = None, time.monotonic(), None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await client.read_flow_run(flow_run_id)
        state = run.state.name if run.state else "?"
        if state != last_state or time.monotonic() - last_beat > 15:
            msg = await latest_log(client)
            detail = f": {msg}" if msg and msg != last_msg else ""
            say(f"  {label}: {state} ({run.name}){detail}")
            last_state, last_beat, last_msg = state, time.monotonic(), msg or last_msg
        if run.state and run.state.is_final():
            return run
        await asyncio.sleep(2)
    raise TimeoutError(f"{label} did not finish within {timeout:.0f}s")


async def latest_log(client: Any) -> str | None:
    """The newest log line on the server (the demo's server runs only the demo's flows)."""
    from prefect.client.schemas.sorting import LogSort

    try:
        logs = await client.read_logs(sort=LogSort.TIMESTAMP_DESC, limit=1)
    except Exception:
        return None
    return logs[0].message.splitlines()[0][:110] if logs else None


async def wait_for_triggered_run(
    client: Any, deployment_id: Any, since: datetime, timeout: float = 120
) -> Any:
    """The first flow run of `deployment_id` created after `since` (made by the automation)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )
        fresh = [
            r
            for r in runs
            if r.created and r.created >= since and r.parameters.get("trigger") == "automation"
        ]
        if fresh:
            return fresh[0]
        await asyncio.sleep(1)
    raise TimeoutError(
        "no retraining run was started by the automation; check the Prefect UI's Automations/Events"
    )


def latest_monitoring(model_name: str) -> Any:
    from sqlalchemy import select

    from nfl_mlops.db import MonitoringRun, session_scope

    with session_scope() as s:
        return s.scalar(
            select(MonitoringRun)
            .where(MonitoringRun.model_name == model_name)
            .order_by(MonitoringRun.created_at.desc())
            .limit(1)
        )


def send_traffic(api_url: str, texts: list[str], labels: list[str] | None = None, chunk: int = 64) -> int:
    """Score texts through the batch endpoint (and, when `labels` are given, send them all as feedback)."""
    import httpx

    ids: list[str] = []
    with httpx.Client(base_url=api_url, timeout=60) as http:
        for i in range(0, len(texts), chunk):
            r = http.post("/mlops/predict/sentiment/batch", json={"texts": texts[i : i + chunk]})
            r.raise_for_status()
            ids.extend(p["prediction_id"] for p in r.json()["predictions"])
        for pid, label in zip(ids, labels or [], strict=False):
            http.post("/mlops/feedback", json={"prediction_id": pid, "label": label}).raise_for_status()
    return len(ids)


def label_the_queue(api_url: str, truth: dict[str, str]) -> dict[str, int]:
    """The annotators' part, played by the corpus' labels: the episode's queue goes out as Label Studio tasks
    (`GET /mlops/labeling/export`), each gets the label a person would give, and the export comes back
    (`POST /mlops/labeling/import`). Only the queued tweets are labelled, not the whole traffic."""
    import httpx

    with httpx.Client(base_url=api_url, timeout=60) as http:
        tasks = http.get("/mlops/labeling/export", params={"limit": 10000}).raise_for_status().json()
        for task in tasks:
            if task["data"]["text"] not in truth:
                continue  # not a tweet of this demo's traffic: left for a person
            task["annotations"] = [
                {
                    "result": [
                        {
                            "from_name": "sentiment",
                            "to_name": "text",
                            "type": "choices",
                            "value": {"choices": [truth[task["data"]["text"]]]},
                        }
                    ]
                }
            ]
        imported = http.post("/mlops/labeling/import", json=tasks).raise_for_status().json()
        queue = http.get("/mlops/labeling/queue", params={"status": "all", "limit": 1}).json()
    return {"queued": queue["total"], "labelled": imported["labelled"]}


async def wait_for_labels_in_retraining(client: Any, deployment_id: Any, minutes: float) -> None:
    """Retraining runs of this demo wait (up to `minutes`) for the episode's queue to be labelled: a
    deployment default, so the automation's runs get it too (`label_wait_minutes`)."""
    from prefect.client.schemas.actions import DeploymentUpdate

    deployment = await client.read_deployment(deployment_id)
    parameters = {**(deployment.parameters or {}), "label_wait_minutes": minutes}
    await client.update_deployment(deployment_id, DeploymentUpdate(parameters=parameters))


class CanaryTraffic:
    """Live traffic for the retrained challenger's canary: while a canary of the model is in progress,
    single predictions (unique keys, so the split follows the canary's weights) go to the API."""

    def __init__(self, api_url: str, model_name: str, texts: list[str]) -> None:
        import threading

        self.api_url, self.model_name, self.texts = api_url, model_name, texts
        self.sent = 0
        self.canary: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="canary-traffic", daemon=True)

    def _in_progress(self, http: Any) -> bool:
        r = http.get("/mlops/deployments", params={"model_id": self.model_name, "limit": 1})
        if r.status_code != 200 or not r.json():
            return False
        d = r.json()[0]
        if d["strategy"] != "canary":
            return False
        self.canary = d
        return d["status"] == "active" and (d.get("config") or {}).get("phase") == "running"

    def _run(self) -> None:
        import httpx

        with httpx.Client(base_url=self.api_url, timeout=30) as http:
            while not self._stop.is_set():
                try:
                    if not self._in_progress(http):
                        self._stop.wait(1.0)
                        continue
                    for _ in range(20):
                        text = self.texts[self.sent % len(self.texts)]
                        http.post(
                            "/mlops/predict/sentiment", json={"text": text, "key": f"canary-{self.sent}"}
                        )
                        self.sent += 1
                except httpx.HTTPError:
                    self._stop.wait(1.0)

    def __enter__(self) -> CanaryTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(30)
        try:  # the final record (promoted or rolled back)
            import httpx

            with httpx.Client(base_url=self.api_url, timeout=30) as http:
                self._in_progress(http)
        except Exception:
            pass


def rollout_line(d: dict[str, Any] | None, sent: int) -> str:
    if not d:
        return "no canary ran (see the retraining run's result)"
    steps = ((d.get("config") or {}).get("params") or {}).get("steps") or []
    end = d["history"][-1] if d.get("history") else {}
    verdict = (
        "promoted" if d["status"] == "active" else f"{d['status']}: {end.get('reason', d.get('reason'))}"
    )
    return (
        f"v{d['model_version']} by canary ({' -> '.join(f'{x:g}%' for x in steps)}): {verdict}; "
        f"{sent} live requests during the canary; deployment {d['deployment_id']}"
    )


def _fmt(m: dict | None) -> str:
    if not m:
        return "     -          -   "
    return f"{m['accuracy']:.3f}  {m['macro_f1']:.3f} (n={m['n']})"


def summary(info: dict[str, Any]) -> str:
    from nfl_mlops.registry.store import Registry

    reg = Registry.from_settings()
    versions = reg.list_versions(info["model_name"])
    v1 = versions[0]
    v2 = versions[-1] if len(versions) > 1 else None
    champ_then = (v2.lineage.get("champion_metrics_at_registration") or {}) if v2 else {}
    base = (v2 or v1).metrics.get("baseline", {})
    lines = [
        "",
        "=" * 78,
        "NFL sentiment MLOps demo: summary",
        "=" * 78,
        f"{'model':<34}{'general test (acc, macro-F1)':<30}{'NFL test (acc, macro-F1)'}",
        f"{'v1 (non-NFL tweets)':<34}{_fmt(champ_then.get('test') or v1.metrics.get('test')):<30}"
        f"{_fmt(champ_then.get('recent'))}",
    ]
    if v2:
        lines.append(
            f"{'v2 (+ labelled NFL feedback)':<34}{_fmt(v2.metrics.get('test')):<30}{_fmt(v2.metrics.get('recent'))}"
        )
    lines.append(
        f"{'TF-IDF + LR baseline (same rows)':<34}{_fmt(base.get('test')):<30}{_fmt(base.get('recent'))}"
    )
    lines += ["", "Versions:"]
    for v in versions:
        lines.append(
            f"  v{v.version}: {v.status}, aliases {v.aliases or '-'}, card {Path(v.path) / 'README.md'}"
        )
        if v.reason:
            lines.append(f"       reason: {v.reason}")
    lines += [
        "",
        f"Drift found: share {info['drift_share']:.2f} of signals (threshold {info['threshold']:.2f}); "
        f"drifted: {', '.join(info['drifted_columns'])}",
        f"Evidently report: {info.get('report')}",
        f"Predictions served: {info['n_traffic']}; queued for labelling by the episode: "
        f"{info.get('n_queued', 0)}; labelled: {info.get('n_labelled', 0)}",
        f"Rollout: {info.get('rollout')}",
        "Flow runs:",
        f"  pipeline (v1):        {info['pipeline_run']}",
        f"  monitoring:           {info['monitoring_run']}",
        f"  retraining (by automation): {info['retraining_run']} -> {info['retraining_state']}",
        f"After the retraining: {info.get('after_check', 'not checked (no retrained version serves)')}",
        f"Prefect UI was at {info['prefect_ui']} (server stopped with the demo; state kept in {info['home']}).",
        f"Wall time: {time.monotonic() - T0:.0f}s",
        "=" * 78,
    ]
    return "\n".join(lines)


async def run_story(stack: Any, args: Any) -> dict[str, Any]:
    from prefect import get_client
    from prefect.deployments import run_deployment

    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.settings import get_settings

    settings = get_settings()
    info: dict[str, Any] = {
        "model_name": settings.model_name,
        "home": str(settings.mlops_home),
        "prefect_ui": stack.prefect_api_url.removesuffix("/api"),
    }
    async with get_client() as client:
        # v1
        say("2/6 training v1 on non-NFL tweets (pipeline deployment: training -> registration -> deployment)")
        run = await run_deployment(
            "pipeline/pipeline",
            timeout=0,
            parameters={
                "data": {
                    "topics_exclude": ["nfl"],
                    "max_train_samples": args.train_samples,
                    "max_eval_samples": args.eval_samples,
                },
                "train": {"epochs": args.epochs},
            },
        )
        run = await wait_flow_run(client, run.id, "pipeline")
        if not run.state.is_completed():
            raise RuntimeError(f"pipeline run {run.id} ended {run.state.name}; see {stack.logs}")
        info["pipeline_run"] = str(run.id)

        # Traffic
        say(
            f"3/6 sending {args.nfl_tweets} NFL tweets through {stack.api_url}/mlops/predict/sentiment/batch "
            "(unlabelled: labels come later, for the tweets monitoring picks)"
        )
        nfl = select(prepare(load_corpus()), topics_include=["nfl"], max_rows=args.nfl_tweets, seed=7)
        info["n_traffic"] = await asyncio.to_thread(send_traffic, stack.api_url, nfl["text"].tolist())

        # Monitoring
        say("4/6 monitoring: Evidently drift of the served window vs. v1's reference profile")
        retraining = await client.read_deployment_by_name("retraining/retraining")
        await wait_for_labels_in_retraining(client, retraining.id, LABEL_WAIT_MINUTES)
        since = datetime.now(UTC)
        run = await run_deployment("monitoring/monitoring", timeout=0, parameters={"window_hours": 1})
        run = await wait_flow_run(client, run.id, "monitoring")
        info["monitoring_run"] = str(run.id)
        result = latest_monitoring(settings.model_name)
        if not run.state.is_completed() or result is None or not result.drift_detected:
            raise RuntimeError(
                f"monitoring ended {run.state.name} and found no drift: {result and result.summary}"
            )
        info.update(
            drift_share=result.drift_share,
            threshold=result.summary["share_threshold"],
            drifted_columns=result.summary["drifted_columns"],
            report=result.report_path,
        )

        # Labels for the episode's queue only (the retraining waits for them)
        truth = dict(zip(nfl["text"], nfl["label"], strict=True))
        labelled = await asyncio.to_thread(label_the_queue, stack.api_url, truth)
        info.update(n_queued=labelled["queued"], n_labelled=labelled["labelled"])
        say(
            f"  the drift episode queued {labelled['queued']} of the {info['n_traffic']} served tweets for "
            f"labelling ({get_settings().labeling_strategy}, no near-duplicates); annotators labelled {labelled['labelled']} "
            "(Label Studio export -> import; the corpus' labels stand in for people)"
        )

        # Retraining, started by the automation
        say("5/6 drift event emitted; waiting for the automation to start the retraining deployment")
        triggered = await wait_for_triggered_run(client, retraining.id, since)
        say(
            f"  automation started retraining run {triggered.name} "
            f"(reason={triggered.parameters.get('reason')!r}, drift_share={triggered.parameters.get('drift_share')})"
        )
        nfl_live = select(prepare(load_corpus()), topics_include=["nfl"], max_rows=400, seed=11)[
            "text"
        ].tolist()
        with CanaryTraffic(stack.api_url, settings.model_name, nfl_live) as live:
            run = await wait_flow_run(client, triggered.id, "retraining")
        info["rollout"] = rollout_line(live.canary, live.sent)
        info["retraining_run"] = str(run.id)
        info["retraining_state"] = run.state.name

        # The new normal: the same traffic, now served by the retrained version, checked again
        serving = await asyncio.to_thread(serving_version, settings.model_name)
        if serving is not None and serving > 1:
            say(
                f"6/6 the same NFL tweets again, served by v{serving}, and the next monitoring check "
                "(the accepted new normal must not open a new drift episode)"
            )
            await asyncio.to_thread(send_traffic, stack.api_url, nfl["text"].tolist())
            run = await run_deployment("monitoring/monitoring", timeout=0, parameters={"window_hours": 1})
            run = await wait_flow_run(client, run.id, "monitoring")
            info["after_check"] = after_check_line(settings.model_name, serving, run)
    return info


def serving_version(model_name: str) -> int | None:
    from nfl_mlops.rollout.state import active_rollout

    r = active_rollout(model_name)
    return r.version if r is not None else None


def after_check_line(model_name: str, version: int, run: Any) -> str:
    """What the check after the retraining found for the serving version, and whether an episode is open."""
    from nfl_mlops.monitoring.episodes import open_episodes

    result = latest_monitoring(model_name)
    summary = dict(result.summary or {}) if result is not None else {}
    episodes = [e for e in open_episodes(model_name) if e.model_version == version]
    drifted = summary.get("drifted_columns") or []
    found = (
        f"drift share {result.drift_share:.2f}"
        if result is not None and result.drift_share is not None
        else "no verdict"
    ) + (f", still drifted: {', '.join(drifted)}" if drifted else ", no signal drifted")
    if summary.get("performance_degraded"):
        found += ", performance degraded"
    opened = f"episode {episodes[0].id} OPEN ({episodes[0].reason})" if episodes else "no drift episode open"
    return f"check of v{version} on the same traffic: {run.state.name}; {found}; {opened}"


def main(args: Any) -> int:
    from deployments.stack import LocalStack
    from nfl_mlops.settings import get_settings

    home = Path(args.home or get_settings().mlops_home).resolve() / "demo"
    if home.exists() and not args.keep:
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    os.environ["MLOPS_LABELING_BUDGET"] = str(args.label_budget)  # the stack's processes inherit it
    stack = LocalStack(home=home, prefect_port=args.prefect_port, api_port=args.api_port)
    say(f"1/6 starting the local stack under {home} (Prefect server, work pool, deployments, worker, API)")
    try:
        stack.start()
        os.environ.update(
            {
                k: stack.env[k]
                for k in (
                    "MLOPS_HOME",
                    "PREFECT_HOME",
                    "PREFECT_API_URL",
                    "PREFECT_SERVER_ANALYTICS_ENABLED",
                    "DO_NOT_TRACK",
                )
            }
        )
        get_settings.cache_clear()
        say(
            f"  Prefect UI {stack.prefect_api_url.removesuffix('/api')}, API {stack.api_url}/docs, logs {stack.logs}"
        )
        info = asyncio.run(run_story(stack, args))
        print(summary(info), flush=True)
        return 0 if info["retraining_state"] == "Completed" else 1
    except Exception as exc:
        print(f"\ndemo failed: {exc}\nlogs: {stack.logs}", file=sys.stderr, flush=True)
        return 1
    finally:
        say("stopping the API, the worker and the Prefect server")
        stack.stop()

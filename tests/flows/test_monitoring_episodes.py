"""The monitoring and retraining flows on a real Prefect server: episodes open by the rule (not on every
alarm), the event goes out only when one opens or its retraining is due, runs that decide nothing end in
a named state, and a typo in the retraining strategy fails before any training."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.usefixtures("prefect_server")

MODEL = "episode-flow"


@pytest.fixture(scope="module")
def v1(tiny_model_dir, tmp_path_factory, settings):
    """v1 (the tiny model) with an airline reference profile, serving by a blue-green rollout."""
    import shutil

    from nfl_mlops.data import load_corpus, prepare, select
    from nfl_mlops.modeling.metrics import evaluate
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.monitoring.reference import build_reference, save_reference
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts

    corpus = prepare(load_corpus())
    model_dir = tmp_path_factory.mktemp("episode_model") / "m"
    shutil.copytree(tiny_model_dir, model_dir)
    airline = select(corpus, topics_include=["airline"], max_rows=500, seed=3)
    model = SentimentModel.load(model_dir)
    test = airline.iloc[:200]
    proba = model.predict_proba(test["text"].tolist())
    save_reference(
        build_reference(
            airline["text"].iloc[200:].tolist(),
            test["text"].tolist(),
            proba,
            test["label"].tolist(),
            encoder=None,
        ),
        model_dir,
    )
    info = Registry.from_settings().register(
        MODEL, model_dir, metrics={"test": evaluate(test["label"].tolist(), proba).as_dict()}
    )
    rollouts.activate(MODEL, info.version, db_url=settings.db_url, reason="test")
    nfl = select(corpus, topics_include=["nfl"], max_rows=300, seed=4)
    return {"version": info.version, "model": model, "nfl": nfl}


def _log(settings, model, frame, at, version, prefix):
    from tests.served import log_served

    texts = frame["text"].tolist()
    log_served(settings.db_url, MODEL, version, texts, model.predict(texts), at, prefix)


def test_episode_opens_by_persistence_and_emits_once_per_due_retraining(v1, settings):
    from flows.monitoring import monitoring_flow
    from nfl_mlops.monitoring import episodes as ep

    now = datetime.now(UTC)
    _log(settings, v1["model"], v1["nfl"], now, v1["version"], "ep")
    rule = {"persistence": 2, "strong_share": None, "clear_checks": 2}  # only persistence opens here

    first = monitoring_flow(
        model_name=MODEL, end=now + timedelta(minutes=1), window_hours=1, return_state=True, **rule
    )
    out = first.result()
    assert out["status"] == "drift" and out["episode"]["action"] == "pending", out["episode"]
    assert out["events"] == [] and first.name == "Alarm"
    assert ep.open_episodes(MODEL, settings.db_url) == []

    second = monitoring_flow(
        model_name=MODEL, end=now + timedelta(minutes=2), window_hours=1, return_state=True, **rule
    )
    out = second.result()
    assert second.name == "EpisodeOpened" and out["events"] == ["drift.detected"]
    [episode] = ep.open_episodes(MODEL, settings.db_url)
    assert episode.model_version == v1["version"] and episode.kind == "drift"
    assert out["episode"]["episode"]["id"] == episode.id
    # the episode's labelling queue: up to the budget, unlabelled served predictions of the window, no
    # text twice, in pick order (the default strategy: typical; the margins are recorded either way)
    from nfl_mlops.monitoring.labeling import normalise, read_queue

    labelling = out["labelling"]
    assert "error" not in labelling, labelling
    assert 0 < labelling["queued"] <= settings.labeling_budget and labelling["added"] == labelling["queued"]
    page = read_queue(MODEL, episode.id, "all", 0, 500, settings.db_url)
    assert page.total == labelling["queued"] and page.pending == page.total
    assert {i.model_version for i in page.items} == {v1["version"]}
    assert len({normalise(i.text) for i in page.items}) == page.total
    assert [i.rank for i in page.items] == list(range(page.total))
    assert settings.labeling_strategy == "typical"
    assert all(0.0 <= i.margin <= 1.0 for i in page.items)

    # the episode's retraining claimed it: later alarms emit nothing
    assert ep.claim(episode.id, "job-under-test", db_url=settings.db_url)
    third = monitoring_flow(
        model_name=MODEL, end=now + timedelta(minutes=3), window_hours=1, return_state=True, **rule
    )
    out = third.result()
    assert third.name == "Alarm" and out["events"] == [] and out["episode"]["action"] == "continued"
    # a later check tops the queue up (never past the budget, never a text twice)
    assert labelling["queued"] <= out["labelling"]["queued"] <= settings.labeling_budget
    page = read_queue(MODEL, episode.id, "all", 0, 500, settings.db_url)
    assert len({normalise(i.text) for i in page.items}) == page.total == out["labelling"]["queued"]
    assert (
        ep.get_episode(episode.id, settings.db_url).n_alarms == 3 - 1
    )  # opened at the 2nd, noted at the 3rd


def test_nothing_to_judge_ends_skipped(v1, settings):
    from flows.monitoring import monitoring_flow

    state = monitoring_flow(
        model_name=MODEL, end=datetime.now(UTC) + timedelta(days=30), window_hours=1, return_state=True
    )
    assert state.is_completed() and state.name == "Skipped" and "nothing judged" in state.message
    assert state.result()["status"] == "skipped"


def test_retraining_without_an_open_episode_is_skipped_and_a_typo_fails_first(settings):
    from flows.retraining import retraining_flow
    from nfl_mlops.db import RetrainingJob, session_scope

    model = "episode-flow-none"
    state = retraining_flow(trigger="automation", model_name=model, reason="drift", return_state=True)
    assert state.is_completed() and state.name == "Skipped" and "no open drift episode" in state.message
    out = state.result()
    with session_scope(settings.db_url) as s:
        assert s.get(RetrainingJob, out["job_id"]).status == "skipped"
    with pytest.raises(Exception, match="(?i)strategy|canery"):
        retraining_flow(trigger="manual", model_name=model, strategy="canery")
    with session_scope(settings.db_url) as s:  # the typo recorded no job and trained nothing
        assert s.query(RetrainingJob).filter_by(model_name=model).count() == 1


def test_a_retraining_run_that_crashed_ends_its_job_and_frees_its_episode(settings):
    """A worker killed mid-training leaves the run `Crashed` and the job `running`: the next monitoring
    check (its `reconcile-retraining-jobs` task, reading the run's state from the real server) ends it."""
    import uuid

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from nfl_mlops.monitoring import episodes as ep
    from nfl_mlops.monitoring.triggers import create_job, update_job
    from nfl_mlops.retraining import get_job
    from tasks.jobs import reconcile_jobs

    @flow(name="retraining-stand-in")
    def stand_in() -> None:
        return None

    model = f"crashed-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        dead = client.create_flow_run(stand_in)
        live = client.create_flow_run(stand_in)
        client.set_flow_run_state(dead.id, Running(), force=True)
        client.set_flow_run_state(dead.id, Crashed(message="Process exited with code -9"), force=True)
        client.set_flow_run_state(live.id, Running(), force=True)
    episode, _ = ep.open_episode(model, 1, "stable", "drift", "drift: 5/7", None, settings.db_url)
    jobs = {}
    for name, run in (("dead", dead), ("live", live)):
        jobs[name] = create_job(model, "drift", "automation", {}, str(run.id), db_url=settings.db_url)
        update_job(jobs[name], "running", db_url=settings.db_url)
    assert ep.claim(episode.id, jobs["dead"], db_url=settings.db_url)

    ended = reconcile_jobs(model)
    assert [e["job_id"] for e in ended] == [jobs["dead"]] and "CRASHED" in ended[0]["reason"]
    assert get_job(settings.db_url, jobs["dead"]).status == "failed"
    assert get_job(settings.db_url, jobs["live"]).status == "running"
    after = ep.get_episode(episode.id, settings.db_url)
    assert after is not None and after.retraining_job_id is None and after.attempts == 1

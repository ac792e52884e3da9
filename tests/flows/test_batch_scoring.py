"""The batch-scoring flow for real on a temporary Prefect server: a registered (tiny, real) version scores a
tweet file in chunks on the thread runner and on a Dask LocalCluster of two worker processes; both outputs
equal what the model says row by row; bad input fails before any chunk is scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]

MODEL = "batch-test-model"


@pytest.fixture(scope="module")
def version(settings, tiny_model_dir) -> int:
    from nfl_mlops.registry.store import Registry

    registry = Registry.from_settings()
    info = registry.register(MODEL, tiny_model_dir, description="batch scoring test")
    registry.set_alias(MODEL, "champion", info.version)
    return info.version


@pytest.fixture(scope="module")
def tweet_file(tmp_path_factory) -> tuple[str, pd.DataFrame]:
    from nfl_mlops.data import load_corpus, prepare

    rows = prepare(load_corpus()).sample(n=800, random_state=3).reset_index(drop=True)
    frame = pd.DataFrame(
        {"id": [f"t{i}" for i in range(len(rows))], "text": rows["text"], "label": rows["label"]}
    )
    path = tmp_path_factory.mktemp("batch") / "tweets.csv"
    frame.to_csv(path, index=False)
    return str(path), frame


@pytest.fixture(scope="module")
def expected(version, tweet_file) -> pd.DataFrame:
    """What the version says about each row, scored directly (no chunks, no flow)."""
    from nfl_mlops import LABELS
    from nfl_mlops.batch import load_version

    model = load_version(MODEL, version)
    proba = model.predict_proba(tweet_file[1]["text"].tolist())
    return pd.DataFrame({"label": np.asarray(LABELS)[proba.argmax(1)], "confidence": proba.max(1)})


def check_output(out, frame: pd.DataFrame, expected: pd.DataFrame, version: int) -> dict:
    from nfl_mlops.batch import MANIFEST, OUTPUT_COLUMNS

    got = pd.read_parquet(out)
    assert got.columns.tolist() == list(OUTPUT_COLUMNS) and len(got) == len(frame)
    got = got.set_index("id").loc[frame["id"]]
    assert got["text"].tolist() == frame["text"].tolist()
    assert (got["model_version"] == version).all()
    assert (
        got["label"].to_numpy() == expected["label"].to_numpy()
    ).mean() >= 0.995  # batch padding may tip a tie
    assert np.allclose(got["confidence"].to_numpy(), expected["confidence"].to_numpy(), atol=1e-3)
    return json.loads((out / MANIFEST).read_text())


def artifact_markdown(flow_run_id) -> str:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterId,
    )

    async def go() -> str:
        async with get_client() as client:
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="batch-scoring")),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            )
            return "\n".join(a.data for a in arts)

    return asyncio.run(go())


def test_thread_runner_scores_every_row_with_the_version(version, tweet_file, expected, tmp_path) -> None:
    from flows.batch_scoring import batch_scoring_flow

    state = batch_scoring_flow(
        input_uri=tweet_file[0],
        output_uri=str(tmp_path / "out"),
        model_name=MODEL,
        chunk_rows=250,
        return_state=True,
    )
    summary = state.result()
    manifest = check_output(tmp_path / "out", tweet_file[1], expected, version)
    assert summary["rows"] == manifest["rows"] == 800 and summary["chunks"] == 4
    assert summary["model_version"] == version and summary["task_runner"] == "threads x2"
    assert len(summary["workers"]) == 1  # threads: one process
    assert sum(summary["label_counts"].values()) == 800 and summary["rows_per_second"] > 0
    md = artifact_markdown(state.state_details.flow_run_id)
    assert f"{MODEL} v{version}" in md and "rows/s" in md and "| positive |" in md


def test_dask_local_cluster_of_two_workers(version, tweet_file, expected, tmp_path) -> None:
    from flows.batch_scoring import batch_scoring_flow

    summary = batch_scoring_flow(
        input_uri=tweet_file[0],
        output_uri=str(tmp_path / "out"),
        model_name=MODEL,
        version=str(version),
        chunk_rows=150,
        runner="dask",
        workers=2,
    )
    check_output(tmp_path / "out", tweet_file[1], expected, version)
    assert summary["rows"] == 800 and summary["chunks"] == 6
    assert summary["task_runner"] == "dask LocalCluster x2"
    assert len(summary["workers"]) == 2  # both worker processes scored chunks


def test_bad_input_fails_before_any_scoring(version, tmp_path) -> None:
    from flows.batch_scoring import batch_scoring_flow

    pd.DataFrame({"tweet": ["go pats"]}).to_csv(tmp_path / "no_text.csv", index=False)
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    for name, message in (("no_text.csv", "no 'text' column"), ("broken.parquet", "cannot read input")):
        state = batch_scoring_flow(
            input_uri=str(tmp_path / name),
            output_uri=str(tmp_path / f"out-{name}"),
            model_name=MODEL,
            return_state=True,
        )
        assert state.is_failed() and message in str(state.message) + repr(
            state.result(raise_on_failure=False)
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "no_text.csv"]  # nothing written


def test_a_chunk_that_fails_leaves_no_output(version, tweet_file, tmp_path, monkeypatch) -> None:
    from flows.batch_scoring import batch_scoring_flow
    from nfl_mlops import batch

    real = batch.score_table

    def flaky(table, model, model_version, batch_size=64):
        if table.column("id")[0].as_py() == "t500":
            raise RuntimeError("worker lost")
        return real(table, model, model_version, batch_size)

    monkeypatch.setattr(batch, "score_table", flaky)  # threads: the same process sees the patch
    state = batch_scoring_flow(
        input_uri=tweet_file[0],
        output_uri=str(tmp_path / "out"),
        model_name=MODEL,
        chunk_rows=250,
        return_state=True,
    )
    assert state.is_failed()
    assert list(tmp_path.iterdir()) == []  # the parts of the chunks that succeeded went with the work folder

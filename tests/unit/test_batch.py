"""Batch scoring's library: chunked reading of CSV/Parquet (local path or URI), input checks that fail before any
scoring, part files that become visible only at the commit, and nothing left behind by a failed run. The model is
a stub here (a keyword rule); tests/flows/test_batch_scoring.py scores with a real registered version."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nfl_mlops import LABELS, batch


class KeywordModel:
    """negative for 'awful', positive for 'great', neutral otherwise; fails on a text containing 'BOOM'."""

    backend = "stub"

    def predict_proba(self, texts, batch_size=64):
        out = np.full((len(texts), 3), 0.1, dtype=np.float32)
        for i, t in enumerate(texts):
            if "BOOM" in t:
                raise RuntimeError("the model broke")
            out[i, 0 if "awful" in t else 2 if "great" in t else 1] = 0.8
        return out


@pytest.fixture
def stub_model(monkeypatch):
    model = KeywordModel()
    monkeypatch.setattr(batch, "load_version", lambda name, version, backend=None: model)
    return model


def tweets(n: int, with_id: bool = True) -> pd.DataFrame:
    words = ["great game, go pats", "awful refs tonight", 'kickoff at 8, stadium, ok, "quoted"\nline two']
    frame = pd.DataFrame({"text": [f"{words[i % 3]} #{i}" for i in range(n)], "extra": np.arange(n)})
    if with_id:
        frame.insert(0, "id", [f"tw{i}" for i in range(n)])
    return frame


def run(source_uri: str, out_uri: str, chunk_rows: int) -> tuple[batch.BatchSummary, list]:
    """The flow's steps without Prefect: plan, score every chunk, commit."""
    work = batch.work_location(out_uri)
    source = batch.open_input(source_uri, batch.staged_input_uri(work), chunk_rows)
    chunks = batch.plan_chunks(source.rows, chunk_rows)
    try:
        results = [batch.score_chunk(source, c, work, "m", 3) for c in chunks]
    except Exception:
        batch.abort_output(work)
        raise
    summary = batch.summarize(source, out_uri, "m", 3, results, 1.0, "inline")
    batch.commit_output(work, out_uri, results, summary)
    return summary, chunks


def test_plan_covers_every_row_once() -> None:
    chunks = batch.plan_chunks(10_001, 2_500)
    assert [(c.start, c.stop) for c in chunks][-1] == (10_000, 10_001) and len(chunks) == 5
    assert sum(c.rows for c in chunks) == 10_001
    assert all(a.stop == b.start for a, b in zip(chunks, chunks[1:], strict=False))
    with pytest.raises(ValueError):
        batch.plan_chunks(10, 0)


def test_csv_is_read_in_chunks_exactly(tmp_path: Path) -> None:
    frame = tweets(2_345)
    frame.to_csv(tmp_path / "in.csv", index=False)
    work = batch.work_location(str(tmp_path / "out"))
    source = batch.open_input(str(tmp_path / "in.csv"), batch.staged_input_uri(work), 500)
    assert source.rows == 2_345 and source.format == "csv" and source.has_id
    assert source.row_groups == (500, 500, 500, 500, 345)  # the staged copy's row groups are the chunks
    chunks = batch.plan_chunks(source.rows, 500)
    got = pa.concat_tables([batch.read_chunk(source, c) for c in chunks]).to_pandas()
    assert got.columns.tolist() == ["id", "text"]
    assert got["id"].tolist() == frame["id"].tolist() and got["text"].tolist() == frame["text"].tolist()


def test_parquet_chunks_that_cut_across_row_groups(tmp_path: Path) -> None:
    frame = tweets(1_000, with_id=False)
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet", row_group_size=300
    )
    source = batch.open_input(str(tmp_path / "in.parquet"), str(tmp_path / "unused.parquet"), 250)
    assert source.row_groups == (300, 300, 300, 100) and not source.has_id
    assert not (tmp_path / "unused.parquet").exists()  # a Parquet input is read where it is
    chunk = batch.Chunk(1, 250, 650)  # spans row groups 0, 1 and 2
    got = batch.read_chunk(source, chunk).to_pandas()
    assert got["id"].tolist() == list(range(250, 650))  # without an id column: the row number
    assert got["text"].tolist() == frame["text"].iloc[250:650].tolist()


def test_output_has_one_row_per_input_row_and_the_columns(tmp_path: Path, stub_model) -> None:
    frame = tweets(1_234)
    frame.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "scored"
    summary, chunks = run(str(tmp_path / "in.csv"), str(out), 400)
    got = pd.read_parquet(out)  # the folder reads as one dataset (the manifest is skipped)
    assert got.columns.tolist() == list(batch.OUTPUT_COLUMNS) and len(got) == len(frame)
    got = pd.concat([t.to_pandas() for t in batch.read_output(str(out))], ignore_index=True)
    assert got["id"].tolist() == frame["id"].tolist() and got["text"].tolist() == frame["text"].tolist()
    expected = [
        "positive" if "great" in t else "negative" if "awful" in t else "neutral" for t in frame["text"]
    ]
    assert got["label"].tolist() == expected
    assert np.allclose(got["confidence"], 0.8) and set(got["model_version"]) == {3}
    assert summary.rows == 1_234 and summary.label_counts == {
        label: expected.count(label) for label in LABELS
    }
    manifest = json.loads((out / batch.MANIFEST).read_text())
    assert [p["rows"] for p in manifest["parts"]] == [c.rows for c in chunks] == [400, 400, 400, 34]
    assert manifest["model_version"] == 3 and manifest["columns"] == list(batch.OUTPUT_COLUMNS)
    # nothing but the parts and the manifest: no staged input, no temporary files, no work folder
    assert sorted(p.name for p in out.iterdir()) == sorted([batch.MANIFEST] + [c.part_name for c in chunks])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "scored"]
    assert "| negative |" in summary.markdown() and "rows/s" in summary.markdown()


def test_a_uri_input_and_output(tmp_path: Path, stub_model) -> None:
    frame = tweets(300)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "in.parquet")
    summary, _ = run(f"file://{tmp_path}/in.parquet", f"file://{tmp_path}/out", 128)
    assert summary.rows == 300 and len(pd.read_parquet(tmp_path / "out")) == 300


def test_missing_text_column_is_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame({"tweet": ["a", "b"], "id": [1, 2]}).to_csv(tmp_path / "in.csv", index=False)
    pd.DataFrame({"body": ["a"]}).to_parquet(tmp_path / "in.parquet")
    for name in ("in.csv", "in.parquet"):
        with pytest.raises(batch.BatchInputError, match=r"no 'text' column \(columns: .*(tweet|body)"):
            batch.open_input(str(tmp_path / name), str(tmp_path / "staged.parquet"), 10)


def test_unreadable_or_empty_input_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "garbage.parquet").write_bytes(b"this is not parquet at all" * 10)
    (tmp_path / "empty.csv").write_text("text,id\n")
    cases = {
        "garbage.parquet": "cannot read input .* as Parquet",
        "missing.csv": "cannot read input .*: FileNotFoundError",
        "empty.csv": "has no rows",
        "tweets.json": "unknown format",
    }
    for name, message in cases.items():
        with pytest.raises(batch.BatchInputError, match=message):
            batch.open_input(str(tmp_path / name), str(tmp_path / "staged.parquet"), 10)


def test_an_existing_output_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "part-00000.parquet").write_bytes(b"x")
    with pytest.raises(batch.BatchInputError, match="exists"):
        batch.work_location(str(tmp_path / "out"))


def test_a_failure_midway_leaves_no_output(tmp_path: Path, stub_model) -> None:
    frame = tweets(1_000)
    frame.loc[700, "text"] = "BOOM"  # chunk 2 of 0..3 fails after chunks 0 and 1 wrote their parts
    frame.to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(RuntimeError, match="the model broke"):
        run(str(tmp_path / "in.csv"), str(tmp_path / "out"), 300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]  # no output, no work folder


def test_a_part_is_written_under_a_temporary_name_then_renamed(tmp_path: Path, monkeypatch) -> None:
    seen = []
    real = pq.write_table

    def spy(table, where, **kw):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))  # what is visible while it writes
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", spy)
    batch.write_part(pa.table({"id": [1], "text": ["x"]}), str(tmp_path), "part-00007.parquet")
    assert seen and "part-00007.parquet" not in seen[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00007.parquet"]


def test_default_output_sits_beside_the_input() -> None:
    assert batch.default_output_uri("s3://b/x/tweets.csv.gz", "nfl", 4) == "s3://b/x/tweets.scored-nfl-v4"
    assert batch.default_output_uri("/d/t.parquet", "nfl", 1) == "/d/t.scored-nfl-v1"

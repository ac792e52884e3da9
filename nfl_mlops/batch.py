"""Batch scoring: a large tweet file (CSV/Parquet, local path or fsspec URI) scored in chunks by a registered
version, written as Parquet part files that become visible all at once.

The pieces, in the order the batch-scoring flow calls them:

1. `open_input` checks the file before anything is scored (it opens, it has a `text` column, it has rows); a
   CSV is streamed once into a Parquet staging file whose row groups are the chunks, so every chunk is a
   direct read wherever it runs.
2. `plan_chunks` cuts the rows into `Chunk`s; `score_chunk` reads one, scores it with the version (loaded once
   per process through the registry, on the runtime the API would serve it with: ONNX when admitted) and
   writes its part file under a temporary name, then renames it.
3. `commit_output` writes the manifest and renames the work folder to the output folder (atomic on a local
   filesystem; on an object store the manifest is the commit marker); `abort_output` removes the work folder.

Output: `<output>/part-00000.parquet`, ... (columns id, text, label, confidence, model_version) and
`<output>/_manifest.json` (pyarrow and pandas skip `_` files when reading the folder as a dataset).
"""

from __future__ import annotations

import json
import os
import posixpath
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from nfl_mlops import LABELS
from nfl_mlops.modeling.hpo import worker_id

OUTPUT_COLUMNS = ("id", "text", "label", "confidence", "model_version")
"""The columns of every output row, in this order."""

MANIFEST = "_manifest.json"
STAGED_INPUT = "_input.parquet"
"""A CSV input's Parquet copy inside the work folder (removed before the commit)."""


class BatchInputError(ValueError):
    """The input (or output location) is unusable: raised before any row is scored."""


@dataclass(frozen=True)
class Chunk:
    """Rows [start, stop) of the input, scored by one task into part file `index`."""

    index: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def part_name(self) -> str:
        return f"part-{self.index:05d}.parquet"


@dataclass(frozen=True)
class BatchInput:
    """A checked input: the Parquet file the chunks read (the input itself, or the staged copy of a CSV)."""

    uri: str
    format: str
    rows: int
    parquet_uri: str
    has_id: bool
    row_groups: tuple[int, ...]
    """Rows of each row group of `parquet_uri`, in order."""


@dataclass(frozen=True)
class ChunkResult:
    """What one scored chunk wrote."""

    index: int
    rows: int
    part: str
    label_counts: dict[str, int]
    seconds: float
    worker: str
    backend: str = "torch"


@dataclass
class BatchSummary:
    """The run's summary (manifest, artifact, flow result)."""

    input_uri: str
    output_uri: str
    model_name: str
    model_version: int
    backend: str
    rows: int
    chunks: int
    label_counts: dict[str, int]
    seconds: float
    rows_per_second: float
    task_runner: str
    workers: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        """The summary artifact: rows, label mix, throughput, version."""
        lines = [
            f"# Batch scoring: {self.model_name} v{self.model_version}",
            "",
            f"- input: `{self.input_uri}`",
            f"- output: `{self.output_uri}` ({self.chunks} part files + `{MANIFEST}`)",
            f"- rows: {self.rows:,} in {self.seconds:.1f} s = **{self.rows_per_second:,.1f} rows/s** "
            f"({self.task_runner}, {len(self.workers)} worker process(es), runtime {self.backend})",
            "",
            "| label | rows | share |",
            "|---|---|---|",
        ]
        for label in LABELS:
            n = self.label_counts.get(label, 0)
            lines.append(f"| {label} | {n:,} | {n / max(self.rows, 1):.1%} |")
        return "\n".join(lines) + "\n"


# Files and URIs -----------------------------------------------------------------------------------------


def filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path in it) of a local path or a URI (`s3://`, `file://`, `memory://`, ...)."""
    from fsspec.core import url_to_fs

    return url_to_fs(uri)


def _join(uri: str, name: str) -> str:
    return posixpath.join(uri.rstrip("/"), name) if "://" in uri else os.path.join(uri, name)


def input_format(uri: str) -> str:
    """`csv` or `parquet` from the file name (`.csv`, `.csv.gz`, `.tsv` is not supported)."""
    name = uri.lower().rstrip("/")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst")):
        return "csv"
    raise BatchInputError(f"input {uri}: unknown format (expected a .csv or .parquet file)")


def default_output_uri(input_uri: str, model_name: str, version: int) -> str:
    """`<input without its suffix>.scored-<model>-v<N>` beside the input."""
    stem = input_uri.rstrip("/")
    for suffix in (".csv.gz", ".csv.bz2", ".csv.zst", ".csv", ".parquet", ".pq"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem}.scored-{model_name}-v{version}"


def _no_text_column(uri: str, columns: list[str]) -> BatchInputError:
    return BatchInputError(
        f"input {uri} has no 'text' column (columns: {', '.join(columns) or 'none'}); "
        "batch scoring needs one tweet per row in a column named 'text'"
    )


def _row_groups(pf: Any) -> tuple[int, ...]:
    return tuple(pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups))


def open_input(uri: str, staging_uri: str, chunk_rows: int) -> BatchInput:
    """Check the input before anything is scored; a CSV is streamed once into `staging_uri` (Parquet, row groups
    of `chunk_rows`), so chunks read only their rows wherever they run.

    Raises:
        BatchInputError: the file cannot be read, has no `text` column or no rows.
    """
    import pyarrow.parquet as pq

    fmt = input_format(uri)
    try:
        fs, path = filesystem(uri)
        if not fs.isfile(path):
            raise FileNotFoundError("no such file")
    except BatchInputError:
        raise
    except Exception as exc:
        raise BatchInputError(f"cannot read input {uri}: {type(exc).__name__}: {exc}") from exc
    if fmt == "parquet":
        try:
            with fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                names = list(pf.schema_arrow.names)
                groups = _row_groups(pf)
        except Exception as exc:
            raise BatchInputError(f"cannot read input {uri} as Parquet: {type(exc).__name__}: {exc}") from exc
        if "text" not in names:
            raise _no_text_column(uri, names)
        parquet_uri = uri
    else:
        names, groups = _stage_csv(uri, fs, path, staging_uri, chunk_rows)
        parquet_uri = staging_uri
    rows = sum(groups)
    if rows == 0:
        raise BatchInputError(f"input {uri} has no rows")
    return BatchInput(
        uri=uri, format=fmt, rows=rows, parquet_uri=parquet_uri, has_id="id" in names, row_groups=groups
    )


def _stage_csv(uri: str, fs: Any, path: str, staging_uri: str, chunk_rows: int) -> tuple[list[str], tuple]:
    """Stream the CSV's `text` (and `id`) columns into a Parquet file with row groups of `chunk_rows`."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    try:
        f = fs.open(path, "rb", compression="infer")
        reader = pcsv.open_csv(
            f,
            read_options=pcsv.ReadOptions(block_size=1 << 22),
            convert_options=pcsv.ConvertOptions(
                column_types={"text": pa.string(), "id": pa.string()}, strings_can_be_null=True
            ),
        )
    except Exception as exc:
        raise BatchInputError(f"cannot read input {uri} as CSV: {type(exc).__name__}: {exc}") from exc
    names = list(reader.schema.names)
    if "text" not in names:
        f.close()
        raise _no_text_column(uri, names)
    keep = ["text"] + (["id"] if "id" in names else [])
    schema = pa.schema([reader.schema.field(n) for n in keep])
    sfs, spath = filesystem(staging_uri)
    sfs.makedirs(posixpath.dirname(spath) if "://" in staging_uri else os.path.dirname(spath), exist_ok=True)
    groups: list[int] = []
    pending: list[Any] = []
    pending_rows = 0

    def flush(writer: Any, final: bool) -> None:
        nonlocal pending, pending_rows
        table = pa.Table.from_batches(pending, schema=schema) if pending else schema.empty_table()
        while table.num_rows >= chunk_rows or (final and table.num_rows):
            head = table.slice(0, chunk_rows)
            writer.write_table(head, row_group_size=chunk_rows)
            groups.append(head.num_rows)
            table = table.slice(head.num_rows)
        pending, pending_rows = table.to_batches(), table.num_rows

    try:
        with f, sfs.open(spath, "wb") as out, pq.ParquetWriter(out, schema) as writer:
            for batch in reader:
                pending.append(batch.select(keep))
                pending_rows += batch.num_rows
                if pending_rows >= chunk_rows:
                    flush(writer, final=False)
            flush(writer, final=True)
    except Exception as exc:
        raise BatchInputError(f"cannot read input {uri} as CSV: {type(exc).__name__}: {exc}") from exc
    return names, tuple(groups)


def staged_input_uri(work_uri: str) -> str:
    """Where a CSV input's Parquet copy goes (inside the work folder)."""
    return _join(work_uri, STAGED_INPUT)


def plan_chunks(rows: int, chunk_rows: int) -> list[Chunk]:
    """Consecutive chunks of at most `chunk_rows` rows covering [0, rows)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    return [
        Chunk(i, start, min(start + chunk_rows, rows)) for i, start in enumerate(range(0, rows, chunk_rows))
    ]


def read_chunk(source: BatchInput, chunk: Chunk) -> Any:
    """The chunk's rows as a pyarrow Table (id, text): only the row groups that overlap it are read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = filesystem(source.parquet_uri)
    wanted, offset, first = [], 0, None
    for i, n in enumerate(source.row_groups):
        if offset < chunk.stop and offset + n > chunk.start:
            wanted.append(i)
            first = offset if first is None else first
        offset += n
    columns = ["text"] + (["id"] if source.has_id else [])
    with fs.open(path, "rb") as f:
        table = pq.ParquetFile(f).read_row_groups(wanted, columns=columns)
    table = table.slice(chunk.start - (first or 0), chunk.rows)
    table = table.set_column(0, "text", table.column("text").cast(pa.string()))
    if not source.has_id:
        table = table.append_column("id", pa.array(np.arange(chunk.start, chunk.stop, dtype=np.int64)))
    return table.select(["id", "text"])


# The model ----------------------------------------------------------------------------------------------

_MODELS: dict[tuple[str, str, int, str], Any] = {}
_MODELS_LOCK = threading.Lock()
_LOCKS: dict[int, threading.Lock] = {}
"""Per loaded model (kept for the process's life): the threads of one process share it one forward at a time."""


def load_version(model_name: str, version: int, backend: str | None = None) -> Any:
    """The registered `version` of `model_name`, loaded once per process (and per state DB) from the folder the
    registry resolves for it (`resolve_version`: hashes checked, fetched from the artifact store when remote), on the runtime the API would serve it with (`backend`, default MLOPS_INFERENCE_BACKEND)."""
    from nfl_mlops.modeling.predictor import load_as_served
    from nfl_mlops.registry.artifacts import resolve_version
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.settings import get_settings

    settings = get_settings()
    key = (settings.db_url, model_name, int(version), backend or settings.inference_backend)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is None:
            info = Registry.from_settings(settings).get(model_name, int(version))
            folder = resolve_version(info, settings)  # verified; fetched into the local cache when remote
            model = load_as_served(folder, name=f"{model_name}-v{version}", setting=backend)
            _LOCKS[id(model)] = threading.Lock()  # one forward at a time: tokenizers are not thread-safe
            _MODELS[key] = model
    return model


def score_table(table: Any, model: Any, model_version: int, batch_size: int = 64) -> Any:
    """Score an (id, text) table: the output rows (id, text, label, confidence, model_version)."""
    import pyarrow as pa

    texts = [t if t is not None else "" for t in table.column("text").to_pylist()]
    lock = _LOCKS.get(id(model)) or threading.Lock()
    with lock:
        proba = model.predict_proba(texts, batch_size=batch_size)
    idx = proba.argmax(axis=1) if len(texts) else np.zeros(0, dtype=np.int64)
    labels = np.asarray(LABELS, dtype=object)[idx]
    return pa.table(
        {
            "id": table.column("id"),
            "text": table.column("text"),
            "label": pa.array(labels.tolist(), type=pa.string()),
            "confidence": pa.array(proba.max(axis=1) if len(texts) else [], type=pa.float32()),
            "model_version": pa.array(np.full(len(texts), int(model_version), dtype=np.int32)),
        }
    )


def write_part(table: Any, work_uri: str, name: str) -> str:
    """Write `table` as `work_uri/name` through a temporary name and a rename; returns the part's URI."""
    import pyarrow.parquet as pq

    fs, folder = filesystem(work_uri)
    final = _join(folder, name)
    tmp = _join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f)
    fs.mv(tmp, final)
    return _join(work_uri, name)


def score_chunk(
    source: BatchInput,
    chunk: Chunk,
    work_uri: str,
    model_name: str,
    model_version: int,
    backend: str | None = None,
    batch_size: int = 64,
) -> ChunkResult:
    """Read, score and write one chunk (a retry rewrites the same part file)."""
    started = time.perf_counter()
    table = read_chunk(source, chunk)
    model = load_version(model_name, model_version, backend)
    scored = score_table(table, model, model_version, batch_size)
    part = write_part(scored, work_uri, chunk.part_name)
    labels, counts = np.unique(
        np.asarray(scored.column("label").to_pylist(), dtype=object), return_counts=True
    )
    return ChunkResult(
        index=chunk.index,
        rows=scored.num_rows,
        part=part,
        label_counts={str(k): int(v) for k, v in zip(labels, counts, strict=True)},
        seconds=round(time.perf_counter() - started, 3),
        worker=worker_id(),
        backend=str(getattr(model, "backend", "torch")),
    )


# Output -------------------------------------------------------------------------------------------------


def work_location(output_uri: str, overwrite: bool = False) -> str:
    """A fresh work folder beside `output_uri` (its parts stay invisible until `commit_output`).

    Raises:
        BatchInputError: the output exists and `overwrite` is off.
    """
    fs, path = filesystem(output_uri)
    if fs.exists(path) and not overwrite and (not fs.isdir(path) or fs.ls(path)):
        raise BatchInputError(f"output {output_uri} exists; pass overwrite=True or another output")
    work = f"{output_uri.rstrip('/')}.incomplete-{uuid.uuid4().hex[:8]}"
    wfs, wpath = filesystem(work)
    wfs.makedirs(wpath, exist_ok=True)
    return work


def commit_output(work_uri: str, output_uri: str, results: list[ChunkResult], summary: BatchSummary) -> str:
    """Check the parts, write the manifest, then make the output visible at once (rename of the work folder).

    Returns:
        The manifest's URI.
    """
    fs, work = filesystem(work_uri)
    _, out = filesystem(output_uri)
    results = sorted(results, key=lambda r: r.index)
    if sum(r.rows for r in results) != summary.rows:
        raise RuntimeError(f"parts hold {sum(r.rows for r in results)} rows, input has {summary.rows}")
    for r in results:
        if not fs.exists(_join(work, posixpath.basename(r.part))):
            raise RuntimeError(f"part {r.part} is missing")
    manifest = {
        **summary.as_dict(),
        "columns": list(OUTPUT_COLUMNS),
        "parts": [{"file": posixpath.basename(r.part), "rows": r.rows} for r in results],
    }
    if fs.exists(_join(work, STAGED_INPUT)):
        fs.rm(_join(work, STAGED_INPUT))
    tmp = _join(work, f".{MANIFEST}.tmp")
    with fs.open(tmp, "w") as f:
        f.write(json.dumps(manifest, indent=2))
    fs.mv(tmp, _join(work, MANIFEST))
    trash = None
    if fs.exists(out):  # overwrite: move the old output aside first, remove it after the switch
        trash = f"{out.rstrip('/')}.replaced-{uuid.uuid4().hex[:8]}"
        fs.mv(out, trash, recursive=True)
    fs.mv(work, out, recursive=True)
    if trash is not None:
        fs.rm(trash, recursive=True)
    return _join(output_uri, MANIFEST)


def abort_output(work_uri: str) -> None:
    """Remove the work folder of a failed run (nothing of it was visible)."""
    fs, work = filesystem(work_uri)
    if fs.exists(work):
        fs.rm(work, recursive=True)


def summarize(
    source: BatchInput,
    output_uri: str,
    model_name: str,
    model_version: int,
    results: list[ChunkResult],
    seconds: float,
    task_runner: str,
) -> BatchSummary:
    """Add the chunks up: rows, label mix, throughput over the scoring stage's wall time."""
    counts = {label: sum(r.label_counts.get(label, 0) for r in results) for label in LABELS}
    rows = sum(r.rows for r in results)
    return BatchSummary(
        input_uri=source.uri,
        output_uri=output_uri,
        model_name=model_name,
        model_version=int(model_version),
        backend=",".join(sorted({r.backend for r in results})) or "-",
        rows=rows,
        chunks=len(results),
        label_counts=counts,
        seconds=round(seconds, 3),
        rows_per_second=round(rows / seconds, 1) if seconds > 0 else 0.0,
        task_runner=task_runner,
        workers=sorted({r.worker for r in results}),
    )


def read_output(output_uri: str) -> Iterator[Any]:
    """The committed output's part tables, in order (what a reader of the output does)."""
    import pyarrow.parquet as pq

    fs, out = filesystem(output_uri)
    with fs.open(_join(out, MANIFEST), "r") as f:
        manifest = json.load(f)
    for part in manifest["parts"]:
        with fs.open(_join(out, part["file"]), "rb") as f:
            yield pq.read_table(f)

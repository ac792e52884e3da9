"""Serving benchmark: the model's own limit vs. a naive server vs. this service, over real HTTP.

    .venv/bin/python bench/serving.py                 # about 4 minutes on 2 cores
    .venv/bin/python bench/serving.py --quick         # about 1.5 minutes, noisier
    .venv/bin/python bench/serving.py --max-wait-ms 0,2,10 --concurrency 1,32   # tune the batcher

On one machine and one model (the packaged MiniLM with a fresh 3-class head: the weights do not
change the cost of a forward pass), with real tweets from the corpus, each a text never sent
before (so the prediction cache never hits unless `cached` is asked for):

  (a) raw:     `SentimentModel.predict` on batches of `c` texts in a loop, no HTTP: the limit.
  (b) naive:   a FastAPI app that runs one forward per request (sync route, FastAPI's thread pool);
               naive-serial: the same with an `async def` route (one forward at a time, on the loop).
  (c) service: this service (`create_app`, uvicorn, dynamic batcher, cache, prediction log).
  batch:       `POST /mlops/predict/sentiment/batch` with `--batch-texts` texts vs. (a) at that size.

Both servers are real uvicorn processes (uvloop + httptools, access log off for both). The load
generator is a closed loop of `c` clients on keep-alive connections, written on raw asyncio
streams so that it costs the shared cores as little as possible. Because the machine is shared
and noisy, every configuration of one concurrency level is measured back to back, `--rounds`
times in turn; the table gives the median throughput of the rounds and the latency percentiles
of all their requests, and the ratios are taken between numbers measured side by side.

Prints a table and writes `bench/results/serving.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODEL_NAME = "bench-serving"


# The naive server (imported by uvicorn in its own process: `--app-dir bench serving:naive_app`)
class NaiveRequest(BaseModel):
    text: str


class NaiveResponse(BaseModel):
    label: str
    confidence: float
    scores: dict[str, float]


def naive_app():
    """A FastAPI app with one forward pass per request; the model folder comes from BENCH_MODEL_DIR.

    The route is a plain `def`, the way most first model servers are written: FastAPI runs it in
    its thread pool, so concurrent requests run concurrent batch-of-one forwards. With
    BENCH_NAIVE_SERIAL=1 the route is `async def` and runs the forward on the event loop instead
    (one request at a time).
    """
    from fastapi import FastAPI

    from nfl_mlops.modeling.predictor import SentimentModel

    model = SentimentModel.load(os.environ["BENCH_MODEL_DIR"])
    model.warmup()
    app = FastAPI(title="naive sentiment server")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "healthy"}

    def answer(text: str) -> NaiveResponse:
        [p] = model.predict([text])
        return NaiveResponse(label=p.label, confidence=p.confidence, scores=p.scores)

    if os.environ.get("BENCH_NAIVE_SERIAL") == "1":

        @app.post("/predict", response_model=NaiveResponse)
        async def predict_serial(body: NaiveRequest) -> NaiveResponse:
            return answer(body.text)
    else:

        @app.post("/predict", response_model=NaiveResponse)
        def predict(body: NaiveRequest) -> NaiveResponse:
            return answer(body.text)

    return app


# Model and texts
def prepare_model(out: Path) -> Path:
    """The packaged MiniLM with a fresh 3-class head, saved once in Hugging Face layout."""
    if (out / "config.json").exists():
        return out
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nfl_mlops import LABEL2ID, LABELS
    from nfl_mlops.modeling.base import resolve_base_model
    from nfl_mlops.modeling.predictor import quiet_transformers

    quiet_transformers()
    base = resolve_base_model("sentence-transformers/all-MiniLM-L6-v2")
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id=dict(LABEL2ID)
    )
    model.config.nfl_mlops_max_length = 64
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


class Texts:
    """Real cleaned, deduplicated tweets in a seeded random order; each `take` returns unseen ones."""

    def __init__(self, seed: int = 0) -> None:
        from nfl_mlops.data import load_corpus, prepare

        texts = prepare(load_corpus())["text"].tolist()
        random.Random(seed).shuffle(texts)
        self.texts = texts
        self.pos = 0
        self.lap = 0

    def take(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            if self.pos == len(self.texts):  # every tweet used: a new lap makes them new texts again
                self.pos, self.lap = 0, self.lap + 1
            t = self.texts[self.pos]
            out.append(t if self.lap == 0 else f"{t} ({self.lap})")
            self.pos += 1
        return out

    def stream(self) -> Iterator[str]:
        while True:
            yield from self.take(256)

    def mean_tokens(self, tokenizer: Any, n: int = 2000) -> float:
        sample = self.texts[:n]
        return statistics.fmean(
            len(ids) for ids in tokenizer(sample, truncation=True, max_length=64)["input_ids"]
        )


# Measurement
@dataclass
class Run:
    """One measured run of one configuration."""

    throughput: float  # texts per second
    requests_per_s: float
    latencies_ms: list[float]
    errors: int = 0
    server_cpu_s_per_text: float | None = None  # CPU seconds of the serving process (for raw: this one)
    mean_batch: float | None = None


@dataclass
class Row:
    config: str
    concurrency: int
    texts_per_request: int
    throughput: float  # median of the rounds
    throughput_rounds: list[float]
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_ms_per_text: float | None = None
    mean_batch: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def summarise(config: str, c: int, per_request: int, runs: list[Run]) -> Row:
    lat = [x for r in runs for x in r.latencies_ms]
    cpu = [r.server_cpu_s_per_text for r in runs if r.server_cpu_s_per_text is not None]
    batch = [r.mean_batch for r in runs if r.mean_batch is not None]
    return Row(
        config,
        c,
        per_request,
        statistics.median(r.throughput for r in runs),
        [round(r.throughput, 1) for r in runs],
        _pct(lat, 50),
        _pct(lat, 99),
        len(lat),
        sum(r.errors for r in runs),
        statistics.median(cpu) * 1000 if cpu else None,
        statistics.median(batch) if batch else None,
    )


def raw_forward(model: Any, texts: Texts, batch: int, seconds: float, warmup_s: float) -> Run:
    """(a): the model on batches of `batch` new texts, back to back, in this process."""
    lat: list[float] = []
    end_warm = time.perf_counter() + warmup_s
    while time.perf_counter() < end_warm:
        model.predict(texts.take(batch), batch_size=batch)
    started, cpu0 = time.perf_counter(), time.process_time()
    n = 0
    while time.perf_counter() - started < seconds:
        chunk = texts.take(batch)
        t0 = time.perf_counter()
        model.predict(chunk, batch_size=batch)
        lat.append((time.perf_counter() - t0) * 1000)
        n += batch
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return Run(n / elapsed, len(lat) / elapsed, lat, server_cpu_s_per_text=cpu / max(1, n))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if m is None:
        raise RuntimeError(f"response without content-length: {head[:200]!r}")
    return status, await reader.readexactly(int(m.group(1)))


async def _http_load(
    port: int, path: str, bodies: Iterator[bytes], concurrency: int, seconds: float, warmup_s: float
) -> tuple[list[tuple[float, float]], int, int]:
    """Closed loop: `concurrency` clients, each sends its next request when the last one is answered.

    Returns the (start, end) of the requests answered inside the measured window, the number of
    requests answered in all (warm-up included) and the number of non-200 answers.
    """
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        "content-length: %d\r\n\r\n"
    ).encode()
    done: list[tuple[float, float]] = []
    errors = 0
    first_error: list[str] = []
    t_start = time.perf_counter()
    t_end = t_start + warmup_s + seconds

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < t_end:
                body = next(bodies)
                t0 = time.perf_counter()
                writer.write(head % len(body) + body)
                status, answer = await _read_response(reader)
                t1 = time.perf_counter()
                if status != 200:
                    errors += 1
                    if not first_error:
                        first_error.append(f"{status} {answer[:300]!r}")
                        print(f"  error from port {port}: {first_error[0]}", file=sys.stderr)
                else:
                    done.append((t0, t1))
        finally:
            writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    window = [(t0, t1) for t0, t1 in done if t1 >= t_start + warmup_s and t1 <= t_end]
    return window, len(done), errors


class Server:
    """A uvicorn process on a free port; `cpu_seconds()` reads its CPU time from /proc."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], health: str, cwd: Path = ROOT
    ) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            *args,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-graceful-shutdown",
            "20",
        ]
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        self.health = health

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; log: {Path(self.log.name).read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.health}", timeout=2) as r:
                    if json.loads(r.read()).get("status") == "healthy":
                        return
            except Exception:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout}s")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_stats(self) -> tuple[float, float] | None:
        """(sum, count) of the service's batch-size histogram, from GET /metrics."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except Exception:
            return None
        got = dict(re.findall(r"^nfl_mlops_batch_size_(sum|count) (\S+)$", text, re.MULTILINE))
        return (float(got["sum"]), float(got["count"])) if len(got) == 2 else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def http_run(
    server: Server,
    path: str,
    make_body: Callable[[], bytes],
    concurrency: int,
    per_request: int,
    seconds: float,
    warmup_s: float,
) -> Run:
    def bodies() -> Iterator[bytes]:
        while True:
            yield make_body()

    cpu0, b0 = server.cpu_seconds(), server.batch_stats()
    done, answered, errors = asyncio.run(
        _http_load(server.port, path, bodies(), concurrency, seconds, warmup_s)
    )
    cpu1, b1 = server.cpu_seconds(), server.batch_stats()
    lat = [(t1 - t0) * 1000 for t0, t1 in done]
    texts = len(done) * per_request
    mean_batch = None
    if b0 and b1 and b1[1] > b0[1]:
        mean_batch = (b1[0] - b0[0]) / (b1[1] - b0[1])  # includes the warm-up second
    return Run(
        texts / seconds,
        len(done) / seconds,
        lat,
        errors,
        (cpu1 - cpu0) / (answered * per_request) if answered else None,  # warm-up included in both
        mean_batch,
    )


# The benchmark
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated client counts")
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    p.add_argument("--rounds", type=int, default=3, help="runs per configuration, interleaved")
    p.add_argument(
        "--max-wait-ms",
        default=None,
        help="comma-separated MLOPS_MAX_WAIT_MS values; one service process each (default: settings)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="one more service process with these environment overrides (KEY= unsets; repeatable)",
    )
    p.add_argument("--max-batch-size", type=int, default=None, help="MLOPS_MAX_BATCH_SIZE of the service")
    p.add_argument("--batch-texts", type=int, default=64, help="texts per /batch request (0 skips it)")
    p.add_argument("--no-naive", action="store_true", help="skip (b)")
    p.add_argument(
        "--serial-levels",
        default="1,32",
        help="concurrency levels at which (b) is also measured with a serial async route ('' skips)",
    )
    p.add_argument("--cached", action="store_true", help="also measure the service when every text is cached")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="MLOPS_TORCH_THREADS for every process (default: all cores)",
    )
    p.add_argument(
        "--omp-wait-policy",
        default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        help="OMP_WAIT_POLICY of every process: PASSIVE (what the service sets for itself) or ACTIVE",
    )
    p.add_argument(
        "--runtimes",
        action="store_true",
        help="export the model's ONNX fp32 and int8 variants; add their raw limits and one service process "
        "per backend (service = torch, service(onnx), service(onnx-int8))",
    )
    p.add_argument("--quick", action="store_true", help="3 s runs, 1 round")
    p.add_argument("--out", type=Path, default=RESULTS / "serving.json")
    p.add_argument("--model-dir", type=Path, default=ROOT / ".mlops" / "bench" / "serving-model")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds = 3.0, 1
    levels = [int(x) for x in args.concurrency.split(",")]
    serial_levels = {int(x) for x in args.serial_levels.split(",") if x} if not args.no_naive else set()

    # before torch is imported anywhere: every process (this one and the servers) runs the same way
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    if args.torch_threads:
        os.environ["MLOPS_TORCH_THREADS"] = str(args.torch_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    model_dir = prepare_model(args.model_dir)
    texts = Texts()
    if args.runtimes:
        from nfl_mlops.modeling.runtimes import export_runtimes

        sample = texts.texts[-500:]  # checked on tweets the runs below reach only after many laps
        record = export_runtimes(model_dir, sample, ["neutral"] * len(sample))
        print(
            "runtimes:", {k: v.get("admitted") for k, v in record.items() if isinstance(v, dict)}, flush=True
        )
        for backend in ("onnx", "onnx-int8"):
            if record[backend]["admitted"]:
                args.variant.append(f"{backend}:MLOPS_INFERENCE_BACKEND={backend}")
    home = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    settings = Settings(mlops_home=home, model_name=MODEL_NAME)
    Registry.from_settings(settings).register(MODEL_NAME, model_dir, description="serving benchmark")
    rollouts.activate(MODEL_NAME, 1, reason="serving benchmark", db_url=settings.db_url)

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_") or k == "MLOPS_TORCH_THREADS"}
    env.update(
        MLOPS_HOME=str(home),
        MLOPS_MODEL_NAME=MODEL_NAME,
        BENCH_MODEL_DIR=str(model_dir),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    if args.runtimes:
        env["MLOPS_INFERENCE_BACKEND"] = "torch"  # "service" stays the torch service; variants add the others
    if args.max_batch_size:
        env["MLOPS_MAX_BATCH_SIZE"] = str(args.max_batch_size)
    max_batch_items = max(args.batch_texts, int(settings.max_batch_items))
    env["MLOPS_MAX_BATCH_ITEMS"] = str(max_batch_items)
    waits = [float(w) for w in args.max_wait_ms.split(",")] if args.max_wait_ms else [settings.max_wait_ms]

    servers: dict[str, Server] = {}
    for w in waits:
        name = "service" if len(waits) == 1 else f"service(wait={w:g}ms)"
        servers[name] = Server(
            name,
            ["--factory", "nfl_mlops.serving.app:create_app"],
            {**env, "MLOPS_MAX_WAIT_MS": str(w)},
            "/mlops/health",
        )
    for spec in args.variant:
        name, _, assignments = spec.partition(":")
        overrides = dict(a.split("=", 1) for a in assignments.split(",") if a)
        variant_env = {**env, "MLOPS_MAX_WAIT_MS": str(waits[0]), **overrides}
        variant_env = {k: v for k, v in variant_env.items() if v != ""}  # KEY= unsets KEY
        servers[f"service({name})"] = Server(
            f"service({name})",
            ["--factory", "nfl_mlops.serving.app:create_app"],
            variant_env,
            "/mlops/health",
        )
    naive_args = ["--app-dir", str(ROOT / "bench"), "--factory", "serving:naive_app"]
    if not args.no_naive:
        servers["naive"] = Server("naive", naive_args, env, "/health")
    if serial_levels:
        servers["naive-serial"] = Server(
            "naive-serial", naive_args, {**env, "BENCH_NAIVE_SERIAL": "1"}, "/health"
        )
    model = SentimentModel.load(model_dir)
    model.warmup((1, 8, 32, 64, args.batch_texts or 1))
    raw_models = {"raw": model}
    if args.runtimes:
        from nfl_mlops.modeling.runtimes import admitted

        for backend in admitted(model_dir):
            if backend != "torch":
                raw_models[f"raw-{backend}"] = SentimentModel.load(model_dir, backend=backend)
                raw_models[f"raw-{backend}"].warmup((1, 8, 32, 64))
    mean_tokens = texts.mean_tokens(model.tokenizer)
    rows: list[Row] = []
    started = time.time()
    try:
        for s in servers.values():
            s.wait_ready()
        stream = texts.stream()

        def single() -> bytes:
            return json.dumps({"text": next(stream)}).encode()

        for c in levels:
            runs: dict[str, list[Run]] = {}
            for _ in range(args.rounds):
                for raw_name, raw_model in raw_models.items():
                    runs.setdefault(raw_name, []).append(
                        raw_forward(raw_model, texts, c, args.seconds, args.warmup)
                    )
                for name, s in servers.items():
                    if name == "naive-serial" and c not in serial_levels:
                        continue
                    path = "/predict" if name.startswith("naive") else "/mlops/predict/sentiment"
                    runs.setdefault(name, []).append(
                        http_run(s, path, single, c, 1, args.seconds, args.warmup)
                    )
            rows.extend(_level_rows(runs, c, lambda name, c=c: c if name.startswith("raw") else 1))
        service = next(iter(servers.values()))
        if args.cached:
            pool = texts.take(500)

            def service_cached() -> bytes:
                return json.dumps({"text": random.choice(pool)}).encode()

            http_run(service, "/mlops/predict/sentiment", service_cached, 8, 1, 2.0, 0.5)  # fill the cache
            for c in (1, 32):
                rs = [
                    http_run(
                        service, "/mlops/predict/sentiment", service_cached, c, 1, args.seconds, args.warmup
                    )
                    for _ in range(args.rounds)
                ]
                rows.append(summarise(f"{service.name} (all cached)", c, 1, rs))
                print(_fmt(rows[-1]), flush=True)
        if args.batch_texts:
            n = args.batch_texts

            def batch_body() -> bytes:
                return json.dumps({"texts": texts.take(n)}).encode()

            for c in (1, 2):
                runs = {}
                for _ in range(args.rounds):
                    runs.setdefault("raw", []).append(raw_forward(model, texts, n, args.seconds, args.warmup))
                    runs.setdefault(f"{service.name} /batch", []).append(
                        http_run(
                            service,
                            "/mlops/predict/sentiment/batch",
                            batch_body,
                            c,
                            n,
                            args.seconds,
                            args.warmup,
                        )
                    )
                for row in _level_rows(runs, c, lambda name: n):
                    row.extra["batch_endpoint"] = True
                    rows.append(row)
    finally:
        for s in servers.values():
            s.stop()
    result = _report(rows, levels, args, mean_tokens, settings, waits, max_batch_items, time.time() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return result


def _level_rows(runs: dict[str, list[Run]], c: int, per_request: Callable[[str], int]) -> list[Row]:
    """Rows of one level; ratios are paired: each round's run vs. the raw/naive run next to it in time."""
    rows = []
    for name, rs in runs.items():
        row = summarise(name, c, per_request(name), rs)
        for other in ("raw", "naive", "naive-serial"):
            if other != name and other in runs and len(runs[other]) == len(rs):
                pairs = [
                    a.throughput / b.throughput for a, b in zip(rs, runs[other], strict=True) if b.throughput
                ]
                if pairs:
                    row.extra[f"vs_{other}"] = statistics.median(pairs)
        if name != "raw" and "raw" in runs:
            row.extra["p99_vs_raw_p99"] = row.p99_ms / summarise("raw", c, c, runs["raw"]).p99_ms
        rows.append(row)
        print(_fmt(row), flush=True)
    return rows


def _fmt(r: Row) -> str:
    cpu = f"{r.server_cpu_ms_per_text:6.2f}" if r.server_cpu_ms_per_text is not None else "     -"
    mb = f"{r.mean_batch:5.1f}" if r.mean_batch is not None else "    -"
    tag = " /batch" if r.extra.get("batch_endpoint") and r.config == "raw" else ""
    return (
        f"{r.config + tag:<26} c={r.concurrency:<3} n/req={r.texts_per_request:<3} "
        f"{r.throughput:7.1f} texts/s  p50 {r.p50_ms:7.1f} ms  p99 {r.p99_ms:7.1f} ms  "
        f"cpu/text {cpu} ms  batch {mb}  rounds {r.throughput_rounds}  err {r.errors}"
    )


def _find(rows: list[Row], config: str, c: int, batch: bool = False) -> Row | None:
    for r in rows:
        if r.config == config and r.concurrency == c and bool(r.extra.get("batch_endpoint")) == batch:
            return r
    return None


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v is not None else "-"


def _report(
    rows: list[Row],
    levels: list[int],
    args: Any,
    mean_tokens: float,
    settings: Any,
    waits: list[float],
    max_batch_items: int,
    seconds: float,
) -> dict[str, Any]:
    services = [
        r.config
        for r in rows
        if r.config.startswith("service")
        and "cached" not in r.config
        and not r.extra.get("batch_endpoint")
        and r.concurrency == levels[0]
    ]
    print("\nThroughput ratios are medians of per-round ratios (runs measured next to each other).\n")
    print(
        "| config | c | texts/s | vs raw | vs naive | vs naive-serial | p50 ms | p99 ms "
        "| CPU ms/text | mean batch |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in levels:
        for name in ["raw", "raw-onnx", "raw-onnx-int8", "naive", "naive-serial", *services]:
            r = _find(rows, name, c)
            if r is None:
                continue
            cpu = f"{r.server_cpu_ms_per_text:.2f}" if r.server_cpu_ms_per_text is not None else "-"
            mb = f"{r.mean_batch:.1f}" if r.mean_batch is not None else "-"
            print(
                f"| {r.config} | {c} | {r.throughput:.1f} | {_x(r.extra.get('vs_raw'))} | "
                f"{_x(r.extra.get('vs_naive'))} | {_x(r.extra.get('vs_naive-serial'))} | {r.p50_ms:.1f} | "
                f"{r.p99_ms:.1f} | {cpu} | {mb} |"
            )
    for c in (1, 2):
        for r in rows:
            if r.extra.get("batch_endpoint") and r.concurrency == c:
                cpu = f"{r.server_cpu_ms_per_text:.2f}" if r.server_cpu_ms_per_text is not None else "-"
                name = r.config if r.config != "raw" else f"raw (batch {r.texts_per_request})"
                print(
                    f"| {name} | {c} | {r.throughput:.1f} | {_x(r.extra.get('vs_raw'))} | - | - | "
                    f"{r.p50_ms:.1f} | {r.p99_ms:.1f} | {cpu} | - |"
                )
    targets: dict[str, Any] = {}
    for s in services:
        t: dict[str, Any] = {}
        svc32, svc1, raw1 = _find(rows, s, 32), _find(rows, s, 1), _find(rows, "raw", 1)
        if svc32 is not None:
            t["service_vs_raw_c32"] = svc32.extra.get("vs_raw")
            t["service_vs_naive_c32"] = svc32.extra.get("vs_naive")
            t["service_vs_naive_serial_c32"] = svc32.extra.get("vs_naive-serial")
        if svc1 is not None and raw1 is not None:
            t["p99_c1_vs_one_forward"] = svc1.p99_ms / raw1.p50_ms
            t["p99_c1_vs_raw_p99_c1"] = svc1.p99_ms / raw1.p99_ms
            t["p50_c1_vs_one_forward"] = svc1.p50_ms / raw1.p50_ms
        targets[s] = {k: v for k, v in t.items() if v is not None}
    for c in (1, 2):
        bsvc = next(
            (r for r in rows if r.extra.get("batch_endpoint") and r.config != "raw" and r.concurrency == c),
            None,
        )
        if bsvc is not None and bsvc.extra.get("vs_raw") is not None:
            targets.setdefault("batch_endpoint", {})[f"batch_endpoint_vs_raw_c{c}"] = bsvc.extra["vs_raw"]
    goals = {
        "service_vs_raw_c32": (">=", 0.8),
        "service_vs_naive_c32": (">=", 3.0),
        "p99_c1_vs_one_forward": ("<=", 1.3),
        "batch_endpoint_vs_raw_c1": (">=", 0.9),
        "batch_endpoint_vs_raw_c2": (">=", 0.9),
    }
    print("\nRatios (target where the issue sets one):")
    for s, t in targets.items():
        for k, v in t.items():
            goal = goals.get(k)
            verdict = ""
            if goal:
                ok = v <= goal[1] if goal[0] == "<=" else v >= goal[1]
                verdict = f"(target {goal[0]} {goal[1]})  {'met' if ok else 'MISSED'}"
            print(f"  {s:<22} {k:<30} {v:5.2f}  {verdict}")
    import torch

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "loadavg_at_end": os.getloadavg(),
        },
        "model": "packaged all-MiniLM-L6-v2 + fresh 3-class head",
        "mean_tokens_per_text": round(mean_tokens, 1),
        "settings": {
            "omp_wait_policy": args.omp_wait_policy or None,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "max_wait_ms": waits,
            "max_batch_size": args.max_batch_size or settings.max_batch_size,
            "batch_texts": args.batch_texts,
            "max_batch_items": max_batch_items,
        },
        "wall_seconds": round(seconds, 1),
        "rows": [asdict(r) for r in rows],
        "ratios": targets,
        "targets": {k: f"{op} {v}" for k, (op, v) in goals.items()},
    }


if __name__ == "__main__":
    main()

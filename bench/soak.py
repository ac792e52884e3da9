"""The soak: a time-compressed run of the whole loop, on the real stack, with faults injected.

    .venv/bin/python bench/soak.py                  # 14 simulated days (see FULL), about 30-45 min here
    .venv/bin/python bench/soak.py --short          # 3 days, 2 faults: the `slow` test's run (tests/e2e/test_soak.py)

The stack is the one `nfl-mlops up` starts (deployments/stack.py): a Prefect server, the process work pool
and every deployment and automation of `prefect.yaml`, a process worker; plus two API replicas (uvicorn
processes) on one PostgreSQL database of their own (created on `--postgres`, dropped after). The loop
decides by itself: the soak only sends traffic, sends late feedback, and at the end of each simulated day
runs the `monitoring` deployment over that day (its own clock parameters: `end` and `window_hours` span
exactly the day's traffic); a drift episode emits its event, the `retrain-on-drift` automation starts the
`retraining` deployment, which trains, gates, registers and rolls out by canary under the live traffic.

Time compression: a simulated day is the real interval in which its traffic was sent (tens of seconds).
The retraining policies that count real time get the soak's scale through the deployments' parameters
(daily budget, failure back-off), and Prefect's hourly/weekly schedules are paused (the soak's day loop
is the schedule). Nothing else is shortened: the models are real fine-tunes of the packaged base model
(a small recipe), the drift checks are the monitoring flow's own.

Traffic: tweets of the packaged corpus by source: ordinary days mix every non-NFL source (the champion
v1's training distribution); game days are 75 % NFL, launch days 75 % Apple, festival days 75 % Coachella.
A share of each day's answers gets its true label the next day (late feedback). Faults (see `FAULTS`)
are injected for real: kill -9 of processes the soak started, a restart of the Prefect server, a broken
candidate deployed by hand, a version that one replica cannot load.

Prints a timeline and checks the invariants (`check_invariants`); writes JSON with `--out`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIXES: dict[str, dict[str, float]] = {
    "ordinary": {},  # every non-NFL source in corpus proportions
    "nfl": {"nfl": 0.75},
    "apple": {"apple": 0.75},
    "coachella": {"coachella": 0.75},
}
"""Day kinds: the share of traffic from one source; the rest is an ordinary day's mix."""

FAULTS = {
    "server-restart": "kill -9 of the Prefect server at the start of the day, started again on its port",
    "replica-kill": "kill -9 of API replica a under load, mid-day; restarted on its port",
    "worker-kill": "kill -9 of the worker and its flow-run process while the retraining trains; worker restarted",
    "broken-candidate": "a copy of the champion that fails on tweets over 24 tokens, registered and deployed by "
    "canary through the HTTP API (as an operator would)",
    "unloadable-version": "a version whose weights are damaged after the worker's smoke test, while replica b "
    "is paused; deployed by the deployment flow (blue-green)",
}


@dataclass
class SoakConfig:
    days: list[str]
    faults: dict[int, list[str]] = field(default_factory=dict)
    requests_per_day: int = 400
    rate: float = 15.0  # requests per second over both replicas
    feedback_share: float = 0.6  # of a day's answers get their true label by the day's end
    train_samples: int = 600
    eval_samples: int = 300
    epochs: float = 1.0
    max_length: int = 64
    backoff_minutes: float = 0.1  # 6 s: a failed retraining may retry at the next check
    seed: int = 0
    canary: dict[str, Any] = field(
        default_factory=lambda: {
            "steps": [25.0, 100.0],
            "min_requests": 25,
            "check_seconds": 1.0,
            "max_wait_s": 240.0,
            "gates": {"max_label_tvd": 1.0, "latency_slack_ms": 2000.0},
        }
    )


FULL = SoakConfig(
    days=[
        "ordinary",  # 1
        "ordinary",  # 2
        "ordinary",  # 3
        "nfl",  # 4  game day: episode 1; the worker is killed while its retraining trains
        "nfl",  # 5  the episode retries after its back-off
        "ordinary",  # 6
        "ordinary",  # 7
        "ordinary",  # 8
        "apple",  # 9  launch: episode 2
        "apple",  # 10
        "ordinary",  # 11
        "coachella",  # 12 festival: episode 3
        "coachella",  # 13
        "ordinary",  # 14
    ],
    faults={
        2: ["server-restart"],
        3: ["replica-kill"],
        4: ["worker-kill"],
        7: ["broken-candidate"],
        11: ["unloadable-version"],
    },
)

SHORT = SoakConfig(
    days=["ordinary", "nfl", "nfl"],  # an episode, its retraining, then the accepted new normal
    faults={1: ["server-restart"], 3: ["replica-kill"]},
    train_samples=300,
    eval_samples=200,
    max_length=48,
)

T0 = time.monotonic()
MAX_EPISODE_DAYS = 3
"""An episode that neither retrains a better version nor accepts a new normal by then is stuck."""


def say(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc: Linux)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send `sig` to `pid` and every descendant of it (processes this soak started); returns the pids."""
    procs = [*descendants(pid), pid]
    for p in procs:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return procs


class Replica:
    """One API process (uvicorn) on a fixed port, started with the stack's environment."""

    def __init__(self, name: str, port: int, env: dict[str, str], logs: Path) -> None:
        self.name, self.port, self.env, self.logs = name, port, env, logs
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"api-{self.name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "nfl_mlops.serving.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 240.0) -> float:
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited {self.proc.returncode}; see {self.logs}")
            try:
                if httpx.get(f"{self.url}/mlops/health/ready", timeout=3).status_code == 200:
                    return time.monotonic() - t
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"replica {self.name} not ready within {timeout:.0f}s; see {self.logs}")

    def kill9(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc.pid)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill9()


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------


@dataclass
class Answer:
    prediction_id: str
    day: int
    topic: str
    label: str
    replica: str
    version: int
    arm: str
    at: datetime


class Traffic:
    """Threads that send the day's mix to the replicas in turn (a load balancer: a refused connection or a
    503 is retried on the other replica) and record every acknowledged (200) prediction."""

    def __init__(
        self, replicas: list[Replica], pools: dict[str, Any], rate: float, seed: int, threads: int = 4
    ):
        self.replicas, self.pools, self.rate = replicas, pools, rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.day, self.kind = 0, "ordinary"
        self.answers: list[Answer] = []
        self.per_day: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()  # per attempt; refused (connection, 503) ones were retried
        self.unanswered = 0  # requests that no replica answered
        self.sent_texts: set[str] = set()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.n_threads = threads

    def set_day(self, day: int, kind: str) -> None:
        with self.lock:
            self.day, self.kind = day, kind

    def _draw(self) -> tuple[str, str, str]:
        with self.lock:
            mix = MIXES[self.kind]
            r = self.rng.random()
            acc = 0.0
            source = "ordinary"
            for name, share in mix.items():
                acc += share
                if r < acc:
                    source = name
                    break
            pool = self.pools[source]
            row = pool[self.rng.randrange(len(pool))]
            return row

    def _run(self, i: int) -> None:
        interval = self.n_threads / self.rate
        with httpx.Client(timeout=30) as client:
            n = i
            while not self.stop_event.is_set():
                started = time.monotonic()
                text, label, topic = self._draw()
                with self.lock:
                    day = self.day
                for attempt in range(len(self.replicas)):
                    rep = self.replicas[(n + attempt) % len(self.replicas)]
                    try:
                        r = client.post(f"{rep.url}/mlops/predict/sentiment", json={"text": text})
                    except httpx.HTTPError as exc:
                        with self.lock:
                            self.errors[f"{rep.name}: {type(exc).__name__}"] += 1
                        continue
                    if r.status_code == 200:
                        body = r.json()
                        with self.lock:
                            self.answers.append(
                                Answer(
                                    body["prediction_id"],
                                    day,
                                    topic,
                                    label,
                                    rep.name,
                                    body["model_version"],
                                    body["arm"],
                                    datetime.now(UTC),
                                )
                            )
                            self.per_day[day] += 1
                            self.sent_texts.add(text)
                        break
                    with self.lock:
                        self.errors[f"{rep.name}: HTTP {r.status_code}"] += 1
                    if r.status_code != 503:  # an answer (an error one); 503 = not ready: the next replica
                        break
                else:
                    with self.lock:
                        self.unanswered += 1
                n += 1
                time.sleep(max(0.0, interval - (time.monotonic() - started)))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=35)

    def wait_for(self, day: int, n: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.per_day[day] < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"day {day}: only {self.per_day[day]} of {n} requests answered")
            time.sleep(0.2)

    def of_day(self, day: int) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.day == day]


def traffic_pools(seed: int) -> dict[str, list[tuple[str, str, str]]]:
    from nfl_mlops.data import load_corpus, prepare

    corpus = prepare(load_corpus())
    rows = corpus[corpus["topic"] != "other"]
    pools: dict[str, list[tuple[str, str, str]]] = {}
    ordinary = rows[~rows["topic"].isin(["nfl"])]
    pools["ordinary"] = list(zip(ordinary["text"], ordinary["label"], ordinary["topic"], strict=True))
    for source in ("nfl", "apple", "coachella"):
        part = rows[rows["topic"] == source]
        pools[source] = list(zip(part["text"], part["label"], part["topic"], strict=True))
    for v in pools.values():
        random.Random(seed).shuffle(v)
    return pools


def send_feedback(replicas: list[Replica], answers: list[Answer], share: float, seed: int) -> int:
    """True labels for a share of the answers: to the replica that answered, else to the other one."""
    rng = random.Random(seed)
    by_name = {r.name: r for r in replicas}
    sent = 0
    with httpx.Client(timeout=30) as client:
        for a in answers:
            if rng.random() >= share:
                continue
            order = [by_name[a.replica], *(r for r in replicas if r.name != a.replica)]
            for rep in order:
                try:
                    r = client.post(
                        f"{rep.url}/mlops/feedback", json={"prediction_id": a.prediction_id, "label": a.label}
                    )
                except httpx.HTTPError:
                    continue
                sent += r.status_code == 200
                break
    return sent


# --------------------------------------------------------------------------------------------
# Watching the loop
# --------------------------------------------------------------------------------------------


class Convergence:
    """Polls the state DB: from the moment the active rollout's traffic changes (a switch) until every live
    replica's heartbeat serves it (`replicas.confirmation`); records each such delay.

    Only a change of the traffic starts a measurement: a replica that restarts (killed, then loading its
    versions again) is not a switch, and its load time belongs to the fault's own figure
    (`ready_again_after_s`)."""

    def __init__(self, model: str, db_url: str) -> None:
        self.model, self.db_url = model, db_url
        self.delays: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from nfl_mlops.rollout import replicas
        from nfl_mlops.rollout import state as rollouts

        unseen = object()
        last_key: Any = unseen  # the traffic seen at the previous poll (the first poll is no switch)
        pending: tuple[Any, float] | None = None  # (traffic, when it changed) until every replica serves it
        while not self.stop_event.is_set():
            try:
                r = rollouts.active_rollout(self.model, "production", self.db_url)
                live = replicas.live_replicas(self.model, "production", db_url=self.db_url)
            except Exception:  # the DB is shared with the loop; a failed poll is retried
                time.sleep(0.25)
                continue
            key = (r.id, json.dumps(r.arms, sort_keys=True, default=str)) if r else None
            if key != last_key:
                pending = (key, time.monotonic()) if key is not None and last_key is not unseen else None
                last_key = key
            if pending is not None and r is not None and live:
                c = replicas.confirmation(r, live)
                if not (c.waiting or c.failed):
                    self.delays.append(
                        {
                            "rollout": r.id,
                            "version": r.version,
                            "seconds": round(time.monotonic() - pending[1], 2),
                        }
                    )
                    pending = None
            time.sleep(0.25)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=5)


def db_state(model: str, db_url: str) -> dict[str, Any]:
    from sqlalchemy import select

    from nfl_mlops.db import Episode, MonitoringRun, RetrainingJob, session_scope
    from nfl_mlops.rollout import state as rollouts

    with session_scope(db_url) as s:
        runs = s.scalars(select(MonitoringRun).where(MonitoringRun.model_name == model)).all()
        eps = s.scalars(select(Episode).where(Episode.model_name == model)).all()
        jobs = s.scalars(select(RetrainingJob).where(RetrainingJob.model_name == model)).all()
        out = {
            "runs": {
                r.id: {
                    "version": r.model_version,
                    "n": r.n_predictions,
                    "drift_share": r.drift_share,
                    "drift": bool(r.drift_detected),
                    "skipped": (r.summary or {}).get("skipped"),
                    "episode": ((r.summary or {}).get("episode") or {}).get("action"),
                    "at": r.created_at.isoformat(),
                }
                for r in runs
            },
            "episodes": {
                e.id: {
                    "version": e.model_version,
                    "arm": e.arm,
                    "status": e.status,
                    "kind": e.kind,
                    "reason": e.reason,
                    "attempts": e.attempts,
                    "job": e.retraining_job_id,
                    "retrained_version": e.retrained_version,
                    "close_reason": e.close_reason,
                }
                for e in eps
            },
            "jobs": {
                j.id: {
                    "status": j.status,
                    "trigger": j.trigger,
                    "flow_run_id": j.flow_run_id,
                    "episode_id": (j.params or {}).get("episode_id") or (j.result or {}).get("episode_id"),
                    "version": (j.result or {}).get("version"),
                    "reasons": (j.result or {}).get("reasons"),
                    "error": (j.result or {}).get("error"),
                    "skipped": (j.result or {}).get("skipped"),
                    "created_at": j.created_at.isoformat(),
                }
                for j in jobs
            },
        }
    out["rollouts"] = {
        r.id: {
            "version": r.version,
            "strategy": r.strategy,
            "status": r.status,
            "reason": r.reason,
            "history": [(h.get("event"), h.get("reason")) for h in r.history or []],
        }
        for r in rollouts.list_rollouts(model, db_url)
    }
    return out


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Timeline lines for what changed in the state DB."""
    lines = []
    for rid, r in after["runs"].items():
        if rid not in before["runs"]:
            verdict = "skipped" if r["skipped"] else ("DRIFT" if r["drift"] else "clear")
            lines.append(
                f"monitoring v{r['version']}: {verdict}, drift share {r['drift_share']:.2f} on {r['n']} predictions"
                + (f", episode {r['episode']}" if r["episode"] else "")
            )
    for eid, e in after["episodes"].items():
        old = before["episodes"].get(eid)
        if old is None:
            lines.append(f"episode {eid[:8]} OPENED on v{e['version']} ({e['kind']}: {e['reason'][:80]})")
        if e["status"] == "closed" and (old is None or old["status"] != "closed"):
            lines.append(f"episode {eid[:8]} closed: {e['close_reason']}")
        elif old is not None and e["attempts"] != old["attempts"]:
            lines.append(f"episode {eid[:8]}: {e['attempts']} failed attempt(s), retry after back-off")
    for jid, j in after["jobs"].items():
        old = before["jobs"].get(jid)
        if old is None or old["status"] != j["status"]:
            detail = j["error"] or j["skipped"] or (f"v{j['version']}" if j["version"] else "")
            gate = f"; gate: {'; '.join(j['reasons'])[:160]}" if j["reasons"] else ""
            lines.append(f"retraining job {jid[:8]} ({j['trigger']}): {j['status']} {detail}{gate}")
    for rid, r in after["rollouts"].items():
        old = before["rollouts"].get(rid)
        for event, reason in r["history"][len(old["history"]) if old else 0 :]:
            lines.append(
                f"rollout v{r['version']} ({r['strategy']}): {event}"
                + (f": {str(reason)[:140]}" if reason else "")
            )
    return lines


# --------------------------------------------------------------------------------------------
# The soak
# --------------------------------------------------------------------------------------------


class Soak:
    def __init__(
        self, cfg: SoakConfig, postgres: str, keep: bool = False, database_url: str | None = None
    ) -> None:
        self.cfg, self.postgres, self.keep, self.given_db = cfg, postgres, keep, database_url
        self.home = Path(tempfile.mkdtemp(prefix="nfl-mlops-soak-"))
        self.db_name = f"soak_{uuid.uuid4().hex[:10]}"
        self.timeline: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.day = 0
        self.stack: Any = None
        self.replicas: list[Replica] = []
        self.traffic: Traffic | None = None
        self.convergence: Convergence | None = None
        self.kinds: dict[int, str] = {}
        self.contexts = contextlib.ExitStack()
        self.unplanned: list[dict[str, Any]] = []

    # -- bookkeeping
    def note(self, what: str, kind: str = "loop") -> None:
        self.timeline.append(
            {"day": self.day, "t": round(time.monotonic() - T0, 1), "kind": kind, "what": what}
        )
        say(f"day {self.day:2d} | {what}")

    def observe(self, before: dict[str, Any]) -> dict[str, Any]:
        after = db_state(self.model, self.db_url)
        for line in diff(before, after):
            self.note(line)
        return after

    # -- set-up
    def _database(self) -> str:
        from sqlalchemy import create_engine, text

        admin = create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        admin.dispose()
        base = self.postgres.rsplit("/", 1)[0]
        return f"{base}/{self.db_name}"

    def _drop_database(self) -> None:
        from sqlalchemy import create_engine, text

        from nfl_mlops.db import dispose_engines

        dispose_engines()
        admin = create_engine(self.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
        admin.dispose()

    def start(self) -> None:
        from deployments.stack import LocalStack, free_port
        from nfl_mlops.settings import get_settings

        self.db_url = self.given_db or self._database()
        os.environ.update(
            {
                "MLOPS_HOME": str(self.home),
                "MLOPS_DATABASE_URL": self.db_url,
                "NFL_MLOPS_ROOT": str(ROOT),
                "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
                # the soak's versions are trained on a few hundred tweets for speed: they fail the gate's
                # behavioural tests, which the soak is not about (it tries the loop's mechanics)
                "MLOPS_GATE_BEHAVIOUR": os.environ.get("MLOPS_GATE_BEHAVIOUR", "false"),
            }
        )
        os.environ.pop("MLOPS_REDIS_URL", None)
        get_settings.cache_clear()
        self.model = get_settings().model_name
        say(f"home {self.home}, state DB {self.db_url}")
        self.stack = LocalStack(self.home, prefect_port=free_port(0), api_port=free_port(0))
        self.stack.start(api=False)
        os.environ.update({k: self.stack.env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME")})
        # prefect read its settings when first imported: this process talks to the stack's server from now on
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self.contexts.enter_context(temporary_settings({PREFECT_API_URL: self.stack.prefect_api_url}))
        say(f"Prefect {self.stack.prefect_api_url}, automations {sorted(self.stack.automations)}")
        self._configure_deployments()

    def _configure_deployments(self) -> None:
        """The soak's clock: schedules paused (the day loop is the schedule), retraining limits per
        simulated day through the deployment's parameters (as an operator sets them)."""
        import asyncio

        from prefect import get_client
        from prefect.client.schemas.actions import DeploymentUpdate

        cfg = self.cfg

        async def go() -> None:
            async with get_client() as client:
                for name in ("monitoring/monitoring", "retraining/retraining"):
                    d = await client.read_deployment_by_name(name)
                    await client.pause_deployment(d.id)
                    if name.startswith("retraining"):
                        params = {
                            **(d.parameters or {}),
                            "daily_budget": 3 * len(cfg.days),
                            "retry_backoff_minutes": cfg.backoff_minutes,
                            "canary": cfg.canary,
                        }
                        await client.update_deployment(d.id, DeploymentUpdate(parameters=params))

        asyncio.run(go())

    def train_v1(self) -> None:
        self.note("v1: pipeline deployment (non-NFL tweets, blue-green)")
        state = self.run_deployment(
            "pipeline/pipeline",
            {
                "data": {
                    "topics_exclude": ["nfl"],
                    "max_train_samples": self.cfg.train_samples,
                    "max_eval_samples": self.cfg.eval_samples,
                    "seed": self.cfg.seed,
                },
                "train": {"epochs": self.cfg.epochs, "max_length": self.cfg.max_length},
            },
            timeout=1200,
        )
        if state != "Completed":
            raise RuntimeError(f"v1 pipeline ended {state}")

    def start_replicas(self) -> None:
        from deployments.stack import free_port

        env = dict(self.stack.env)
        env["MLOPS_ROLLOUT_POLL_SECONDS"] = "1"
        self.replicas = [Replica(n, free_port(0), env, self.stack.logs) for n in ("a", "b")]
        for r in self.replicas:
            r.start()
        for r in self.replicas:
            r.wait_ready()
        self.note(f"replicas a ({self.replicas[0].url}) and b ({self.replicas[1].url}) ready on PostgreSQL")

    # -- Prefect
    def run_deployment(self, name: str, parameters: dict[str, Any], timeout: float = 900) -> str:
        """Run a deployment through the worker and wait; returns the final state's name."""
        from prefect.deployments import run_deployment

        run = run_deployment(name, parameters=parameters, timeout=timeout)
        return run.state.name if run.state else "?"

    def flow_runs(self, deployment: str, since: datetime) -> list[Any]:
        import asyncio

        from prefect import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

        async def go() -> list[Any]:
            async with get_client() as client:
                d = await client.read_deployment_by_name(deployment)
                runs = await client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[d.id])),
                    flow_run_filter=FlowRunFilter(),
                )
                return [r for r in runs if r.created and r.created >= since]

        return asyncio.run(go())

    def read_flow_run(self, run_id: Any) -> Any:
        import asyncio

        from prefect import get_client

        async def go() -> Any:
            async with get_client() as client:
                return await client.read_flow_run(run_id)

        return asyncio.run(go())

    def alarm_events(self, since: datetime) -> int:
        """How many retraining-starting events (`drift.detected`, `performance.degraded`) Prefect holds since
        `since` (the server persists events a moment after they are emitted)."""
        import asyncio

        from prefect import get_client
        from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

        from nfl_mlops.events import DRIFT_DETECTED, PERFORMANCE_DEGRADED, event_name

        names = [event_name(DRIFT_DETECTED), event_name(PERFORMANCE_DEGRADED)]

        async def go() -> int:
            async with get_client() as client:
                page = await client.read_events(
                    EventFilter(
                        occurred=EventOccurredFilter(
                            since=since, until=datetime.now(UTC) + timedelta(minutes=1)
                        ),
                        event=EventNameFilter(name=names),
                    ),
                    limit=50,  # the server's maximum page
                )
                return len(page.events)

        return asyncio.run(go())

    def wait_retrainings(
        self, since: datetime, monitoring_state: str = "", timeout: float = 1500, appear_s: float = 180
    ) -> list[Any]:
        """Wait until every retraining run created since `since` is final (worker-kill fault: inject it while
        the first one trains).

        A retraining is expected when the monitoring run opened an episode or Prefect holds an alarm event
        since `since` (a retry inside an open episode): then wait up to `appear_s` for the automation's run
        to appear, however slow the machine (the automation acts after the event is persisted and the worker
        polls), instead of taking "no run yet" for "no run"."""
        deadline = time.monotonic() + timeout
        inject = "worker-kill" in self.cfg.faults.get(self.day, []) and not any(
            f["fault"] == "worker-kill" for f in self.faults
        )
        expected = 1 if monitoring_state == "EpisodeOpened" else 0
        look_for_events = monitoring_state == "Alarm"  # a retry inside an open episode emits too
        appear_by = time.monotonic() + appear_s
        events_settled = time.monotonic() + 15  # the server persists an event within seconds
        time.sleep(3)  # the automation acts within a second or two of the event
        while time.monotonic() < deadline:
            runs = self.flow_runs("retraining/retraining", since)
            now = time.monotonic()
            if look_for_events and not runs:
                expected = max(expected, min(1, self.alarm_events(since)))
            if len(runs) < expected and now < appear_by:
                time.sleep(2)
                continue
            if len(runs) < expected:
                self.note(f"no retraining run appeared within {appear_s:.0f} s of the alarm", kind="fault")
                expected = len(runs)
            if look_for_events and not runs and now < events_settled:
                time.sleep(2)
                continue
            if (
                inject
                and any(r.state and r.state.is_running() for r in runs)
                and self._training_running(since)
            ):
                self.fault_worker_kill(next(r for r in runs if r.state.is_running()))
                inject = False
                continue
            if all(r.state and r.state.is_final() for r in runs):
                return runs
            time.sleep(2)
        raise TimeoutError("retraining runs did not finish")

    def _training_running(self, since: datetime) -> bool:
        """A `training` subflow run started since `since` has been running for 10 s (fine-tuning is under way)."""
        import asyncio

        from prefect import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        async def go() -> list[Any]:
            async with get_client() as client:
                return await client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["training"]))
                )

        for r in asyncio.run(go()):
            running = r.created and r.created >= since and r.state and r.state.is_running() and r.start_time
            if running and (datetime.now(UTC) - r.start_time).total_seconds() >= 10:
                return True
        return False

    # -- faults
    def fault(self, name: str, **details: Any) -> None:
        self.faults.append({"day": self.day, "fault": name, **details})
        self.note(f"FAULT {name}: " + ", ".join(f"{k}={v}" for k, v in details.items()), kind="fault")

    def fault_server_restart(self) -> None:
        proc = self.stack.processes["prefect-server"]
        killed = kill_tree(proc.pid)
        proc.wait(timeout=30)
        t = time.monotonic()
        self.stack._spawn(
            "prefect-server",
            [
                str(Path(sys.executable).with_name("prefect")),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.stack.prefect_port),
            ],
        )
        self.stack._wait(
            "prefect-server", f"{self.stack.prefect_api_url}/health", lambda r: r.status_code == 200, 180
        )
        self.fault("server-restart", killed=len(killed), back_after_s=round(time.monotonic() - t, 1))

    def fault_replica_kill(self) -> None:
        a = self.replicas[0]
        acked_before = len(self.traffic.answers) if self.traffic else 0
        a.kill9()
        t = time.monotonic()
        a.start()
        ready = a.wait_ready()
        self.fault(
            "replica-kill",
            replica="a",
            acknowledged_before_kill=acked_before,
            ready_again_after_s=round(time.monotonic() - t, 1),
            load_s=round(ready, 1),
        )

    def fault_worker_kill(self, run: Any) -> None:
        proc = self.stack.processes["prefect-worker"]
        killed = kill_tree(proc.pid)
        proc.wait(timeout=30)
        killed_at = time.monotonic()
        self.stack.start_worker()
        self.fault("worker-kill", run=run.name, processes=len(killed))
        # Prefect learns of it only through the missing heartbeats (crash-unresponsive-runs)
        while time.monotonic() - killed_at < 600:
            state = self.read_flow_run(run.id).state
            if state and state.is_final():
                self.note(
                    f"run {run.name} marked {state.name} {time.monotonic() - killed_at:.0f} s after the kill "
                    "(no heartbeat: crash-unresponsive-runs)",
                    kind="recovery",
                )
                return
            time.sleep(3)
        raise TimeoutError(
            f"run {run.name} still {state.name if state else '?'} 600 s after its worker was killed"
        )

    def _http(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.replicas[0].url}{path}", timeout=120, **kw)

    def fault_broken_candidate(self) -> None:
        from nfl_mlops.registry.store import Registry
        from tests.api.rollout_helpers import truncated_positions_model

        champ = Registry.from_settings().get(self.model, "champion")
        folder = truncated_positions_model(Path(champ.path), self.home / "broken-candidate")
        r = self._http(
            "POST",
            "/mlops/models/register",
            json={
                "model_name": self.model,
                "model_path": str(folder),
                "description": "soak: broken candidate",
            },
        )
        r.raise_for_status()
        version = r.json()["version"]
        r = self._http(
            "POST",
            "/mlops/deployments",
            json={
                "model_id": self.model,
                "model_version": version,
                "strategy": "canary",
                "canary": self.cfg.canary,
                "reason": "soak: broken candidate",
            },
        )
        r.raise_for_status()
        dep = r.json()
        self.fault("broken-candidate", version=version, deployment=dep["deployment_id"])
        t = time.monotonic()
        while time.monotonic() - t < 400:
            d = self._http("GET", f"/mlops/deployments/{dep['deployment_id']}").json()
            if d["status"] != "active":
                self.note(
                    f"broken v{version}: {d['status']} after {time.monotonic() - t:.0f} s", kind="recovery"
                )
                return
            time.sleep(1)
        raise TimeoutError(f"the broken candidate v{version} was not rolled back")

    def fault_unloadable_version(self) -> None:
        from nfl_mlops.registry.store import Registry
        from nfl_mlops.rollout import state as rollouts

        champ = Registry.from_settings().get(self.model, "champion")
        r = self._http(
            "POST",
            "/mlops/models/register",
            json={
                "model_name": self.model,
                "model_path": champ.path,
                "description": "soak: a re-export of the champion",
            },
        )
        r.raise_for_status()
        version = r.json()["version"]
        path = Path(Registry.from_settings().get(self.model, version).path) / "model.safetensors"
        since = datetime.now(UTC)
        from prefect.deployments import run_deployment

        run = run_deployment(
            "deployment/deployment",
            parameters={"version": str(version), "reason": "soak: a version replica b cannot load"},
            timeout=0,
        )
        b = self.replicas[1]
        paused = False
        deadline = time.monotonic() + 300
        try:
            while time.monotonic() < deadline:
                state = self.read_flow_run(run.id).state
                if not paused and state and state.is_running():
                    os.kill(b.proc.pid, signal.SIGSTOP)
                    paused, paused_at = True, time.monotonic()
                active = rollouts.active_rollout(self.model, "production", self.db_url)
                if paused and active and active.version == version and active.created_at >= since:
                    time.sleep(1.5)  # replica a loads it
                    # a new, damaged file replaces it (as a sync tool would), never an in-place write: a
                    # replica that mmapped the old weights keeps valid pages (truncating a mapped file
                    # would SIGBUS it, a different fault)
                    tmp = path.with_suffix(".damaged")
                    tmp.write_bytes(b"\x00damaged on disk after the smoke test" * 64)
                    os.replace(tmp, path)
                    break
                if state and state.is_final():
                    raise RuntimeError(f"deployment run ended {state.name} before the rollout started")
                time.sleep(0.2)
        finally:
            if paused:
                os.kill(b.proc.pid, signal.SIGCONT)
        self.fault(
            "unloadable-version",
            version=version,
            replica="b",
            paused_s=round(time.monotonic() - paused_at, 1),
        )
        t = time.monotonic()
        while time.monotonic() - t < 300:
            state = self.read_flow_run(run.id).state
            if state and state.is_final():
                rows = [x for x in rollouts.list_rollouts(self.model, self.db_url) if x.version == version]
                self.note(
                    f"v{version}: deployment run {state.name}; rollout {rows[0].status if rows else '?'}"
                    + (f" ({rows[0].reason[:140]})" if rows and rows[0].reason else ""),
                    kind="recovery",
                )
                return
            time.sleep(1)
        raise TimeoutError("the deployment of the unloadable version did not end")

    # -- the days
    def watchdog(self) -> None:
        """A process of the stack that exited without a fault injected: noted (an invariant fails), restarted."""
        procs = {f"api-{r.name}": r.proc for r in self.replicas}
        procs["prefect-worker"] = self.stack.processes.get("prefect-worker")
        procs["prefect-server"] = self.stack.processes.get("prefect-server")
        for name, proc in procs.items():
            if proc is None or proc.poll() is None:
                continue
            log = self.stack.logs / f"{name}.log"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            self.unplanned.append({"day": self.day, "process": name, "code": proc.returncode, "log": tail})
            self.note(
                f"UNPLANNED EXIT of {name} (code {proc.returncode}): {' | '.join(tail)[-300:]}", kind="fault"
            )
            if name.startswith("api-"):
                rep = next(r for r in self.replicas if f"api-{r.name}" == name)
                rep.start()
                rep.wait_ready()
            elif name == "prefect-worker":
                self.stack.start_worker()

    def run_day(self, day: int, kind: str, state: dict[str, Any]) -> dict[str, Any]:
        self.day = day
        self.watchdog()
        self.kinds[day] = kind
        faults = self.cfg.faults.get(day, [])
        if "server-restart" in faults:
            self.fault_server_restart()
        self.traffic.set_day(day, kind)
        start = datetime.now(UTC)
        self.note(f"--- {kind} day ---", kind="day")
        if "replica-kill" in faults:
            self.traffic.wait_for(day, self.cfg.requests_per_day // 2)
            self.fault_replica_kill()
        self.traffic.wait_for(day, self.cfg.requests_per_day)
        end = datetime.now(UTC)
        if "broken-candidate" in faults:
            self.fault_broken_candidate()
        if "unloadable-version" in faults:
            self.fault_unloadable_version()
        # labels for a share of the day's answers arrive at its end (hours after the predictions)
        answered = [a for a in self.traffic.of_day(day) if a.at <= end]
        n = send_feedback(self.replicas, answered, self.cfg.feedback_share, day)
        self.note(f"feedback: {n} true labels for the day's {len(answered)} answers")
        state = self.observe(state)
        window_h = (end - start).total_seconds() / 3600
        result = self.run_deployment(
            "monitoring/monitoring",
            {
                "end": end.isoformat(),
                "window_hours": window_h,
                "retry_backoff_minutes": self.cfg.backoff_minutes,
            },
        )
        self.note(f"monitoring run: {result}")
        runs = self.wait_retrainings(end, result)
        for r in runs:
            self.note(f"retraining run {r.name}: {r.state.name}")
        self.watchdog()
        return self.observe(state)

    def run(self) -> dict[str, Any]:
        t_start = time.monotonic()
        try:
            self.start()
            self.train_v1()
            self.start_replicas()
            self.traffic = Traffic(self.replicas, traffic_pools(self.cfg.seed), self.cfg.rate, self.cfg.seed)
            self.convergence = Convergence(self.model, self.db_url)
            self.traffic.start()
            self.convergence.start()
            state = db_state(self.model, self.db_url)
            for day, kind in enumerate(self.cfg.days, 1):
                state = self.run_day(day, kind, state)
            self.traffic.stop()
            time.sleep(2)  # the replicas' prediction logs drain
            self.convergence.stop()
            report = self.report(time.monotonic() - t_start)
        finally:
            self.shutdown()
        return report

    def shutdown(self) -> None:
        if self.traffic:
            self.traffic.stop()
        if self.convergence:
            self.convergence.stop()
        for r in self.replicas:
            try:
                os.kill(r.proc.pid, signal.SIGCONT)
            except (ProcessLookupError, AttributeError):
                pass
            r.stop()
        if self.stack:
            self.stack.stop()
        self.contexts.close()
        try:
            if not self.given_db:
                self._drop_database()
        except Exception as exc:  # noqa: BLE001 - report, keep going
            say(f"could not drop {self.db_name}: {exc}")
        if not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    # -- the verdict
    def golden_scores(self, champions: list[int]) -> dict[int, float]:
        from nfl_mlops.modeling.metrics import evaluate
        from nfl_mlops.modeling.predictor import SentimentModel
        from nfl_mlops.registry.evaluation import load_golden
        from nfl_mlops.registry.store import Registry
        from nfl_mlops.settings import get_settings

        golden = load_golden(get_settings().mlops_home, self.model)
        if golden is None:
            return {}
        rows = golden.rows[~golden.rows["text"].isin(self.traffic.sent_texts)]
        reg = Registry.from_settings()
        out = {}
        for v in champions:
            model = SentimentModel.load(reg.get(self.model, v).path)
            out[v] = round(
                evaluate(rows["label"].tolist(), model.predict_proba(rows["text"].tolist())).macro_f1, 4
            )
        return out

    def report(self, wall_s: float) -> dict[str, Any]:
        from sqlalchemy import select

        from nfl_mlops.db import Prediction, session_scope
        from nfl_mlops.registry.gate import GateParams

        final = db_state(self.model, self.db_url)
        acked = {a.prediction_id for a in self.traffic.answers}
        with session_scope(self.db_url) as s:
            logged = set(s.scalars(select(Prediction.id).where(Prediction.model_name == self.model)).all())
        from nfl_mlops.rollout import state as rollouts

        champions: list[int] = []  # v1 (blue-green), then every version a canary promoted
        for ro in sorted(rollouts.list_rollouts(self.model, self.db_url), key=lambda x: x.created_at):
            promoted = any(h.get("event") == "promoted" for h in ro.history or [])
            first = ro.strategy == "blue_green" and ro.status != "rolled_back" and not champions
            if (promoted or first) and (not champions or champions[-1] != ro.version):
                champions.append(ro.version)
        golden = self.golden_scores(champions)
        out = {
            "config": {k: v for k, v in self.cfg.__dict__.items()},
            "wall_s": round(wall_s, 1),
            "days": len(self.cfg.days),
            "timeline": self.timeline,
            "faults": self.faults,
            "state": final,
            "acknowledged": len(acked),
            "acknowledged_missing": len(acked - logged),
            "errors": dict(self.traffic.errors),
            "unanswered": self.traffic.unanswered,
            "convergence": self.convergence.delays,
            "champions": champions,
            "golden_macro_f1": golden,
            "gate_margin": GateParams().margin,
            "kinds": self.kinds,
            "unplanned_exits": self.unplanned,
        }
        out["invariants"] = check_invariants(out)
        return out


def check_invariants(r: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each invariant: ok + the figures it was judged on."""
    st = r["state"]
    eps, jobs = st["episodes"], st["jobs"]
    outcome = defaultdict(list)
    failed = defaultdict(list)
    for j in jobs.values():
        if j["episode_id"] and j["status"] in ("completed", "rejected", "rolled_back"):
            outcome[j["episode_id"]].append(j["status"])
        if j["status"] == "failed":
            failed[j["episode_id"]].append(j["error"])
    worker_kills = sum(f["fault"] == "worker-kill" for f in r["faults"])
    inv: dict[str, dict[str, Any]] = {}
    inv["retrainings == episodes"] = {
        "ok": len(eps) > 0
        and all(len(outcome.get(e, [])) == 1 for e in eps)
        and sum(len(v) for v in outcome.values()) == len(eps)
        and sum(len(v) for v in failed.values()) <= worker_kills,
        "episodes": len(eps),
        "retrainings with an outcome": sum(len(v) for v in outcome.values()),
        "failed (injected worker kills)": f"{sum(len(v) for v in failed.values())} ({worker_kills})",
    }
    # an episode is false when it opens after two days of unchanged (ordinary) traffic
    kinds = {int(k): v for k, v in r["kinds"].items()}
    false_eps = []
    opened_day = {}
    for line in r["timeline"]:
        if " OPENED " in line["what"]:
            opened_day[line["what"].split()[1]] = line["day"]
    for eid, day in opened_day.items():
        if kinds.get(day) == "ordinary" and kinds.get(day - 1, "ordinary") == "ordinary":
            false_eps.append(eid)
    per_30 = len(false_eps) * 30 / max(r["days"], 1)
    inv["false episodes <= 1 per 30 days"] = {
        "ok": len(false_eps) <= max(1, r["days"]) // 30 or per_30 <= 1,
        "false episodes": len(false_eps),
        "per 30 days": round(per_30, 2),
    }
    # every drift period (a run of days that are not ordinary) opens an episode of its own, and every
    # episode ends (a retrained version serves, or the new normal is accepted) within MAX_EPISODE_DAYS
    closed_day = {}
    for line in r["timeline"]:
        if line["what"].startswith("episode ") and " closed: " in line["what"]:
            closed_day[line["what"].split()[1]] = line["day"]
    periods: list[tuple[int, int]] = []
    for day in sorted(kinds):
        if kinds[day] == "ordinary":
            continue
        if periods and periods[-1][1] == day - 1 and kinds[periods[-1][0]] == kinds[day]:
            periods[-1] = (periods[-1][0], day)
        else:
            periods.append((day, day))
    unanswered = [
        f"{kinds[a]} days {a}-{b}"
        for a, b in periods
        if not any(a <= d <= b + 1 for d in opened_day.values())
    ]
    last = max(kinds) if kinds else 0
    lingering = {
        eid[:8]: (closed_day.get(eid, last) - day)
        for eid, day in opened_day.items()
        if closed_day.get(eid, last) - day > MAX_EPISODE_DAYS
    }
    inv["every drift period opens an episode, and every episode ends"] = {
        "ok": not unanswered and not lingering,
        "drift periods": len(periods),
        "episodes": len(opened_day),
        "periods without an episode": unanswered,
        f"episodes open > {MAX_EPISODE_DAYS} days": lingering,
    }
    g = [r["golden_macro_f1"][v] for v in r["champions"] if v in r["golden_macro_f1"]]
    drops = [round(a - b, 4) for a, b in zip(g, g[1:], strict=False)]
    inv["golden set: no drop beyond the gate's margin"] = {
        "ok": bool(g) and all(d <= r["gate_margin"] for d in drops),
        "champions": r["champions"],
        "macro_f1": g,
        "margin": r["gate_margin"],
    }
    delays = [d["seconds"] for d in r["convergence"]]
    inv["replicas converge within 5 s"] = {
        "ok": bool(delays) and max(delays) <= 5.0,
        "switches": len(delays),
        "max_s": max(delays) if delays else None,
    }
    stuck = [jid for jid, j in jobs.items() if j["status"] in ("scheduled", "running")]
    inv["no job stays running"] = {"ok": not stuck, "open jobs": stuck}
    inv["no process exits unless a fault killed it"] = {
        "ok": not r["unplanned_exits"],
        "unplanned exits": [
            f"{u['process']} (code {u['code']}, day {u['day']})" for u in r["unplanned_exits"]
        ],
    }
    return inv


def print_report(r: dict[str, Any]) -> None:
    print("\n" + "=" * 100)
    print(f"Soak: {r['days']} simulated days in {r['wall_s'] / 60:.1f} min wall time")
    print("=" * 100)
    for line in r["timeline"]:
        print(f"day {line['day']:2d} {line['t']:7.1f}s {line['kind']:8s} {line['what']}")
    print("-" * 100)
    print(
        f"acknowledged predictions: {r['acknowledged']}, missing from the state DB: {r['acknowledged_missing']}"
    )
    print(f"errors per attempt: {r['errors'] or 'none'}; requests no replica answered: {r['unanswered']}")
    print(f"champions: {r['champions']}, golden macro-F1: {r['golden_macro_f1']}")
    print(f"replica convergence (s): {[d['seconds'] for d in r['convergence']]}")
    print("Invariants:")
    for name, v in r["invariants"].items():
        figures = ", ".join(f"{k}={val}" for k, val in v.items() if k != "ok")
        print(f"  [{'ok' if v['ok'] else 'FAIL'}] {name}: {figures}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", action="store_true", help="the 3-day run of the slow test")
    p.add_argument(
        "--postgres",
        default=os.environ.get(
            "MLOPS_TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL the soak may create (and drop) one database on",
    )
    p.add_argument(
        "--database-url",
        help="use this (empty) PostgreSQL database for the state instead of creating one on --postgres",
    )
    p.add_argument("--out", type=Path, help="write the report as JSON")
    p.add_argument("--keep", action="store_true", help="keep MLOPS_HOME (logs, models) after the run")
    args = p.parse_args()
    report = Soak(
        SHORT if args.short else FULL, args.postgres, keep=args.keep, database_url=args.database_url
    ).run()
    print_report(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(v["ok"] for v in report["invariants"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""`nfl-mlops`: the command line (demo, local stack, serving, registry, lineage, HPO and rollout commands).

Commands that orchestrate (demo, up, run) import the flow and deployment packages lazily, so the
CLI starts fast and `nfl_mlops` stays free of Prefect at import time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any


def _cmd_demo(args: argparse.Namespace) -> int:
    from deployments.demo import main

    return main(args)


def _cmd_up(args: argparse.Namespace) -> int:
    from deployments.stack import LocalStack
    from nfl_mlops.settings import get_settings

    stack = LocalStack(
        home=get_settings().mlops_home,
        prefect_port=args.prefect_port,
        api_port=args.api_port,
        prefect_database_url=args.prefect_database_url,
    )
    try:
        stack.start(api=not args.no_api)
    except (ValueError, RuntimeError, TimeoutError, OSError) as exc:
        stack.stop()
        print(f"error: the stack did not start: {exc}", file=sys.stderr)
        return 1
    print(
        f"Prefect UI   {stack.prefect_api_url.removesuffix('/api')} (state: {stack.prefect_database})\n"
        f"API          {stack.api_url}/docs\n"
        f"Logs         {stack.logs}\n"
        f"In another shell: export PREFECT_API_URL={stack.prefect_api_url}\n"
        "  prefect deployment run 'pipeline/pipeline' --watch\nCtrl-C stops everything.",
        flush=True,
    )
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from nfl_mlops.security import is_loopback_bind, loopback_only
    from nfl_mlops.settings import get_settings

    settings = get_settings()
    host = args.host or settings.api_host
    if loopback_only(settings) and not is_loopback_bind(host):
        print(
            f"error: refusing to serve on {host} without an API key: set MLOPS_API_KEY (clients send it as "
            "X-API-Key), or MLOPS_ALLOW_NO_AUTH=true to serve every client without one",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        "nfl_mlops.serving.app:create_app",
        factory=True,
        host=host,
        port=args.port or settings.api_port,
        log_level="info",
        # open connections get this long to finish; the service's own shutdown is bounded below 30 s
        # (Kubernetes' default grace period): readiness 503 at once, queued requests <= 10 s, log <= 5 s
        timeout_graceful_shutdown=10,
    )
    return 0


def _note_temporary_server() -> None:
    """Without a Prefect server to talk to, Prefect starts a temporary one for the run. Say so, once, and turn
    off its telemetry: its heartbeat meets the run's own writes on the temporary SQLite file and printed two
    long "database is locked" tracebacks before the flow's output, for a run that succeeds."""
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    print(
        "note: no Prefect server is configured (PREFECT_API_URL), so this run uses a temporary one and its "
        "history ends with it; `nfl-mlops up` keeps a server, the UI and the automations running",
        file=sys.stderr,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    """Run one flow in this process (against PREFECT_API_URL, or a temporary server)."""
    params = json.loads(args.params) if args.params else {}
    _note_temporary_server()
    if args.flow == "pipeline":
        from flows.pipeline import pipeline_flow as flow
    elif args.flow == "training":
        from flows.training import training_flow as flow
    elif args.flow == "monitoring":
        from flows.monitoring import monitoring_flow as flow
    elif args.flow == "retraining":
        from flows.retraining import retraining_flow as flow
    elif args.flow == "batch-scoring":
        from flows.batch_scoring import batch_scoring_flow as flow
    else:
        from flows.deployment import deployment_flow as flow
    result = flow(**params)
    print(json.dumps(result.model_dump() if hasattr(result, "model_dump") else result, indent=2, default=str))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from nfl_mlops.registry.store import Registry

    for v in Registry.from_settings().list_versions(args.model):
        test = v.metrics.get("test", {})
        print(
            f"{v.model_name} v{v.version:<3} {v.status:<9} aliases={','.join(v.aliases) or '-':<20} "
            f"acc={test.get('accuracy', float('nan')):.4f} macro_f1={test.get('macro_f1', float('nan')):.4f} "
            f"{v.path}"
        )
    return 0


def _cmd_deployments(args: argparse.Namespace) -> int:
    from nfl_mlops.rollout.state import list_rollouts

    for r in list_rollouts(args.model):
        print(
            f"{r.id} {r.model_name} v{r.version} {r.strategy:<10} {r.status:<11} {r.created_at:%Y-%m-%d %H:%M:%S} "
            f"{r.reason or ''}"
        )
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from nfl_mlops.registry.store import Registry, RegistryError
    from nfl_mlops.rollout.actions import rollback
    from nfl_mlops.rollout.state import RolloutError

    try:
        r = rollback(Registry.from_settings(), args.deployment_id, args.reason)
    except (RolloutError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"rolled back: {r.model_name} now serves v{r.version} (deployment {r.id})")
    return 0


def _cmd_registry_sync(args: argparse.Namespace) -> int:
    """Send the Hub pushes that wait in the queue."""
    from nfl_mlops.registry.hub import HubMirror

    mirror = HubMirror()
    if args.list:
        for p in mirror.queued():
            print(
                f"{p.model_name} v{p.version} -> {p.repo_id}@{p.tag} {p.status} attempts={p.attempts} "
                f"{p.last_error or ''}"
            )
        return 0
    if not mirror.enabled:
        print("error: the Hub mirror needs HUGGINGFACE_TOKEN and HUGGINGFACE_REPO", file=sys.stderr)
        return 2
    results = mirror.sync(limit=args.limit)
    for p in results:
        print(
            f"{p.model_name} v{p.version} -> {p.repo_id}@{p.tag}: {p.status}"
            + (f" ({p.commit_sha})" if p.commit_sha else f" ({p.last_error})")
        )
    if not results:
        print("nothing queued")
    return 0 if all(p.status == "pushed" for p in results) else 1


def _cmd_lineage(args: argparse.Namespace) -> int:
    from nfl_mlops.lineage import lineage_of_prediction

    try:
        out = lineage_of_prediction(args.prediction_id)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2, default=str))
    return 0


def _cmd_hpo(args: argparse.Namespace) -> int:
    from nfl_mlops.modeling.hpo import HPOParams, wandb_sweep_config

    params = json.loads(args.params) if args.params else {}
    if args.print_sweep:
        from nfl_mlops.settings import get_settings

        search = HPOParams(**params.get("search", {}))
        print(json.dumps(wandb_sweep_config(search, get_settings().wandb_project), indent=2))
        return 0
    if args.sweep_trial is not None:
        return _sweep_trial(json.loads(args.sweep_trial), params)
    from flows.hpo import hpo_flow

    print(json.dumps(hpo_flow(**params), indent=2, default=str))
    return 0


def _sweep_trial(values: dict[str, Any], params: dict[str, Any]) -> int:
    """One W&B sweep trial (started by `wandb agent`): train and score the agent's configuration."""
    import uuid

    from nfl_mlops.data.datasets import build_training_data, load_base
    from nfl_mlops.modeling.hpo import HPO_EVAL_SAMPLES, HPO_TRAIN_SAMPLES, tracked_trial
    from nfl_mlops.modeling.params import DataParams, TrainParams
    from nfl_mlops.settings import get_settings

    settings = get_settings()
    data = DataParams(
        **{
            "max_train_samples": HPO_TRAIN_SAMPLES,
            "max_eval_samples": HPO_EVAL_SAMPLES,
            **params.get("data", {}),
        }
    )
    train = TrainParams(**{**params.get("train", {}), **values})
    dataset = build_training_data(data, load_base(data.source))
    result = tracked_trial(
        dataset,
        train,
        train.base_model or settings.base_model,
        settings.mlops_home / "hpo" / "sweep" / uuid.uuid4().hex[:12],
        name="sweep-trial",
        tags=["hpo", "sweep"],
    )
    print(json.dumps(result, default=str))
    return 0 if result.get("value") is not None else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nfl-mlops", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="the whole loop end to end on the embedded defaults")
    d.add_argument(
        "--home", default=None, help="state root (default MLOPS_HOME or .mlops); the demo uses <home>/demo"
    )
    d.add_argument(
        "--keep", action="store_true", help="keep the previous demo state instead of starting fresh"
    )
    d.add_argument(
        "--train-samples", type=int, default=3000, help="training rows for v1 (v2 adds the feedback)"
    )
    d.add_argument("--eval-samples", type=int, default=1000, help="cap on the validation and test rows")
    d.add_argument(
        "--nfl-tweets", type=int, default=1200, help="NFL tweets sent through the API and labelled"
    )
    d.add_argument("--epochs", type=float, default=1.0)
    d.add_argument(
        "--label-budget",
        type=int,
        default=400,
        help="tweets the drift episode queues for labelling (MLOPS_LABELING_BUDGET for the demo's stack): with "
        "200 the held-out third (about 60 rows) is too small for the gate to show v2 better",
    )
    d.add_argument("--prefect-port", type=int, default=None, help="default MLOPS_PREFECT_PORT (4200)")
    d.add_argument("--api-port", type=int, default=None, help="default MLOPS_API_PORT (8000)")
    d.set_defaults(func=_cmd_demo)

    u = sub.add_parser(
        "up", help="start the local stack (Prefect server, deployments, worker, API) until Ctrl-C"
    )
    u.add_argument("--prefect-port", type=int, default=None, help="default MLOPS_PREFECT_PORT (4200)")
    u.add_argument("--api-port", type=int, default=None, help="default MLOPS_API_PORT (8000)")
    u.add_argument(
        "--prefect-database-url",
        default=None,
        help="run the Prefect server on this PostgreSQL database (created when missing), e.g. "
        "postgresql://user:pass@db:5432/prefect; default MLOPS_PREFECT_DATABASE_URL, else SQLite under MLOPS_HOME",
    )
    u.add_argument("--no-api", action="store_true")
    u.set_defaults(func=_cmd_up)

    s = sub.add_parser("serve", help="run the /mlops API")
    s.add_argument("--host", default=None, help="default MLOPS_API_HOST (127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="default MLOPS_API_PORT (8000)")
    s.set_defaults(func=_cmd_serve)

    r = sub.add_parser("run", help="run one flow in this process")
    r.add_argument(
        "flow", choices=["pipeline", "training", "deployment", "monitoring", "retraining", "batch-scoring"]
    )
    r.add_argument("--params", help='flow parameters as JSON, e.g. \'{"data": {"max_train_samples": 500}}\'')
    r.set_defaults(func=_cmd_run)

    m = sub.add_parser("models", help="list registered versions")
    m.add_argument("--model", default=None)
    m.set_defaults(func=_cmd_models)

    dp = sub.add_parser("deployments", help="list rollouts")
    dp.add_argument("--model", default=None)
    dp.set_defaults(func=_cmd_deployments)

    rb = sub.add_parser("rollback", help="send traffic back to the previous version")
    rb.add_argument("deployment_id")
    rb.add_argument("--reason", default="manual rollback (CLI)")
    rb.set_defaults(func=_cmd_rollback)

    rg = sub.add_parser("registry", help="registry maintenance (Hub mirror)")
    rg_sub = rg.add_subparsers(dest="registry_command", required=True)
    sy = rg_sub.add_parser("sync", help="send the versions queued for the Hugging Face Hub mirror")
    sy.add_argument("--limit", type=int, default=None, help="at most this many pushes")
    sy.add_argument("--list", action="store_true", help="only list the queue")
    sy.set_defaults(func=_cmd_registry_sync)

    ln = sub.add_parser("lineage", help="where a prediction came from (model, data, features, runs) as JSON")
    ln.add_argument("prediction_id")
    ln.set_defaults(func=_cmd_lineage)

    hp = sub.add_parser(
        "hpo", help="hyperparameter search (Optuna) and registration of the best configuration"
    )
    hp.add_argument("--params", help='flow parameters as JSON, e.g. \'{"search": {"n_trials": 8}}\'')
    hp.add_argument("--print-sweep", action="store_true", help="print the equivalent W&B sweep configuration")
    hp.add_argument(
        "--sweep-trial",
        default=None,
        metavar="JSON",
        help="run one W&B sweep trial with these hyperparameters (used by `wandb agent`)",
    )
    hp.set_defaults(func=_cmd_hpo)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

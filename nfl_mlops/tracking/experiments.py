"""Experiment tracking: Weights & Biases (offline by default) mirrored into the state DB.

Without `WANDB_API_KEY` runs are written offline under MLOPS_HOME/wandb for a later `wandb sync`;
with it they go to W&B cloud. Either way each run also gets a row in `experiments`, so the API
and SDK can list experiments without W&B.

Artifacts: the training run logs its dataset (type `dataset`) and its model (type `model`) as
W&B artifacts. Online, the dataset is logged with `use_artifact` (an input of the run, so W&B's
lineage graph reads dataset -> run -> model); offline W&B cannot record inputs, so both are
outputs of the run and the dataset version is in the model artifact's metadata. Files are added
with the `immutable` policy (referenced, not copied: datasets and candidate folders never change),
so they must still exist when `wandb sync` sends an offline run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from sqlalchemy import select

from nfl_mlops.db import Experiment, session_scope, utcnow
from nfl_mlops.security import scrub


class ExperimentTracker:
    """One tracked run at a time: start, log metrics, finish."""

    def __init__(self, settings: Any = None, use_wandb: bool = True) -> None:
        from nfl_mlops.settings import get_settings

        self.settings = settings or get_settings()
        self.use_wandb = use_wandb
        self.run: Any = None
        self.experiment_id: str | None = None
        self.tracker_run_id: str | None = None
        self.artifacts: list[str] = []
        self._metrics: dict[str, Any] = {}

    @property
    def mode(self) -> str:
        if not self.use_wandb:
            return "disabled"
        return "online" if self.settings.wandb_api_key is not None else "offline"

    def start(
        self,
        name: str,
        config: Mapping[str, Any] | None = None,
        tags: Sequence[str] = (),
        job_type: str = "train",
        group: str | None = None,
    ) -> str:
        """Open a run and its DB row; returns the experiment id.

        Args:
            group: W&B run group (an HPO study groups its trials).
        """
        config = scrub(dict(config or {}))
        run_id = run_dir = None
        if self.use_wandb:
            import wandb

            self.settings.wandb_dir.mkdir(parents=True, exist_ok=True)
            os.environ.update({"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"})
            # the key goes to the W&B client only, never into the process environment (children inherit it)
            key = self.settings.wandb_api_key.get_secret_value() if self.settings.wandb_api_key else None
            # Artifact staging and cache next to the runs, not in the user's home.
            for var, sub in (
                ("WANDB_DATA_DIR", "data"),
                ("WANDB_CACHE_DIR", "cache"),
                ("WANDB_ARTIFACT_DIR", "artifacts"),
            ):
                os.environ.setdefault(var, str(self.settings.wandb_dir / sub))
            self.run = wandb.init(
                project=self.settings.wandb_project,
                entity=self.settings.wandb_entity,
                name=name,
                config=config,
                tags=list(tags),
                job_type=job_type,
                group=group,
                dir=str(self.settings.wandb_dir),
                mode=cast(Literal["online", "offline", "disabled", "shared"], self.mode),
                reinit="finish_previous",
                settings=wandb.Settings(console="off", x_disable_stats=True, silent=True, api_key=key),
            )
            run_id, run_dir = self.run.id, self.run.dir
            self.tracker_run_id = run_id
        with session_scope(self.settings.db_url) as s:
            row = Experiment(
                name=name,
                tracker="wandb-" + self.mode,
                tracker_run_id=run_id,
                run_dir=run_dir,
                config=config,
                tags=list(tags),
            )
            s.add(row)
            s.flush()
            self.experiment_id = row.id
        return self.experiment_id

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics (per step or final)."""
        if self.run is not None:
            self.run.log(dict(metrics), step=step)
        self._metrics.update({k: v for k, v in metrics.items() if isinstance(v, int | float)})

    def log_table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def log_artifact(
        self,
        name: str,
        type: str,
        path: str | Path,
        metadata: Mapping[str, Any] | None = None,
        aliases: Sequence[str] = (),
        as_input: bool = False,
    ) -> str | None:
        """Log a file or folder as a W&B artifact of this run; returns `name:alias` (None without W&B).

        Args:
            as_input: record it as an input of the run (`use_artifact`) when W&B is online; offline
                runs cannot record inputs, so it is logged as an output instead.
        """
        if self.run is None:
            return None
        import wandb

        path = Path(path)
        artifact = wandb.Artifact(_artifact_name(name), type=type, metadata=scrub(dict(metadata or {})))
        if path.is_dir():
            artifact.add_dir(str(path), policy="immutable")
        else:
            artifact.add_file(str(path), policy="immutable")
        if as_input and self.mode == "online":
            self.run.use_artifact(artifact, aliases=list(aliases) or None)
        else:
            self.run.log_artifact(artifact, aliases=list(aliases) or None)
        ref = f"{artifact.name}:{aliases[0] if aliases else 'latest'}"
        self.artifacts.append(ref)
        return ref

    def log_confusion_matrix(
        self, key: str, y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]
    ) -> None:
        """The W&B confusion-matrix chart of predicted vs. true class ids."""
        if self.run is not None:
            import wandb

            self.run.log(
                {
                    key: wandb.plot.confusion_matrix(
                        y_true=[int(v) for v in y_true],
                        preds=[int(v) for v in y_pred],
                        class_names=list(class_names),
                        title=key,
                    )
                }
            )

    def log_image(
        self, key: str, path: str | Path, caption: str | None = None, step: int | None = None
    ) -> None:
        """Log an image file (e.g. a model-card PNG) to the run as `wandb.Image` under `key`.

        Offline, W&B copies it into the run folder (`files/media/images/`) for `wandb sync`.
        Without W&B nothing is logged; a missing file raises FileNotFoundError either way.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(path)
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    def finish(self, summary: Mapping[str, Any] | None = None, status: str = "finished") -> None:
        """Close the run; `summary` becomes its final metrics (in W&B and the DB row)."""
        summary = dict(summary or {})
        if self.run is not None:
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish(exit_code=0 if status == "finished" else 1)
            self.run = None
        self._metrics.update(summary)
        if self.experiment_id is not None:
            with session_scope(self.settings.db_url) as s:
                row = s.get(Experiment, self.experiment_id)
                if row is not None:
                    row.metrics = {**(row.metrics or {}), **self._metrics}
                    row.status = status
                    row.finished_at = utcnow()


def _artifact_name(name: str) -> str:
    """W&B artifact names allow letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "artifact"


def offline_runs(settings: Any = None) -> list[Path]:
    """Offline run folders under MLOPS_HOME/wandb, oldest first (send with `wandb sync <folder>`)."""
    from nfl_mlops.settings import get_settings

    root = (settings or get_settings()).wandb_dir / "wandb"
    return sorted(p for p in root.glob("offline-run-*") if p.is_dir()) if root.exists() else []


def list_experiments(db_url: str | None = None, limit: int = 100) -> list[Experiment]:
    with session_scope(db_url) as s:
        return list(s.scalars(select(Experiment).order_by(Experiment.created_at.desc()).limit(limit)))

"""Labelling under a budget: which served predictions a drift or degradation episode sends to annotators.

No team labels every served tweet. When monitoring opens an episode (or checks an open one), the episode's
queue is topped up to a budget (`MLOPS_LABELING_BUDGET`, default 200) with the unlabelled predictions of
the window that teach a retraining the most. Two strategies (`MLOPS_LABELING_STRATEGY`):

- **typical** (the default, `select_typical`): TypiClust (Hacohen et al. 2022). A uniform sample of the
  window, k-means on the base encoder's sentence embeddings into `budget` clusters, the most typical tweet
  (densest neighbourhood) of each, largest clusters first. An episode is traffic the serving version does
  not know, so its margins say little there; measured on the NFL shift (bench/README.md, labelling under a
  budget) typical was ahead of the uncertain strategy at every budget.
- **uncertain** (`select_diverse_uncertain`): the margin between the served version's two most likely
  classes (small = unsure); among the most uncertain `pool_factor x budget` candidates, greedy k-center on
  the embeddings (each pick the candidate farthest from everything already picked or queued), so the
  budget is not spent on many variants of one confusing tweet.

Either way, **no near-duplicates**: a candidate whose embedding is within `duplicate_similarity` (cosine)
of a pick, or whose normalised text equals one, is never picked (retweets, copy-pasted spam).

The queue is a table (`labeling_tasks`), one row per queued prediction; a queued prediction counts as
labelled once its prediction row has a `true_label` (from `POST /mlops/feedback` or a Label Studio import),
so there is one source of truth for labels. `GET /mlops/labeling/queue` pages it; Label Studio's task JSON
goes out through `label_studio_tasks` and comes back through `import_label_studio`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select

from nfl_mlops import LABELS
from nfl_mlops.db import LabelingTask, Prediction, get_engine, session_scope, utcnow

LABELING_BUDGET = 200
"""Predictions queued for labelling per episode (over all its checks)."""

POOL_FACTOR = 4.0
"""The diversity step chooses among the `POOL_FACTOR x budget` most uncertain candidates."""

DUPLICATE_SIMILARITY = 0.95
"""Cosine similarity (base encoder) at and above which two tweets count as near-duplicates."""

COVERAGE_SHARE = 0.0
"""Share of the budget chosen for coverage of all candidates rather than among the uncertain pool (0: all
from the pool; `bench/labeling.py` measures the alternatives)."""

LABEL_STUDIO_FROM_NAME = "sentiment"
LABEL_STUDIO_TO_NAME = "text"
LABEL_STUDIO_CONFIG = f"""<View>
  <Text name="{LABEL_STUDIO_TO_NAME}" value="$text"/>
  <Choices name="{LABEL_STUDIO_FROM_NAME}" toName="{LABEL_STUDIO_TO_NAME}" choice="single" showInLine="true">
{chr(10).join(f'    <Choice value="{label}"/>' for label in LABELS)}
  </Choices>
</View>"""
"""The labelling config of a Label Studio project that reads `label_studio_tasks` and exports what
`import_label_studio` reads (Settings -> Labeling Interface -> Code)."""


@dataclass(frozen=True)
class Selection:
    """The positions (into the candidates) chosen, in pick order, and why each was or was not."""

    picked: list[int]
    margins: np.ndarray
    pool_size: int
    duplicates_skipped: int


@dataclass
class QueueResult:
    """What one top-up of an episode's queue did."""

    episode_id: str | None
    budget: int
    queued_before: int
    added: int
    candidates: int
    duplicates_skipped: int
    added_ids: list[str] = field(default_factory=list)

    @property
    def queued(self) -> int:
        return self.queued_before + self.added

    def as_dict(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "budget": self.budget,
            "queued": self.queued,
            "added": self.added,
            "candidates": self.candidates,
            "duplicates_skipped": self.duplicates_skipped,
        }


def margins(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row (0 = a coin toss between two classes, 1 = certain)."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[1] < 2:
        raise ValueError(f"probabilities must be rows x classes (>= 2), not {proba.shape}")
    top = np.sort(proba, axis=1)
    return top[:, -1] - top[:, -2]


_SPACE = re.compile(r"\s+")
_URL = re.compile(r"https?://\S+")


def normalise(text: str) -> str:
    """A tweet's text for exact-duplicate detection: lower case, links and runs of spaces folded, no 'RT'."""
    text = _URL.sub("<url>", text.lower())
    text = re.sub(r"^rt\s+@\w+:?\s*", "", text.strip())
    return _SPACE.sub(" ", text).strip()


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _checked_margins(texts: Sequence[str], proba: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """The candidates' margins, after checking that texts, probabilities and embeddings are aligned."""
    n = len(texts)
    if len(proba) != n or len(embeddings) != n:
        raise ValueError(
            f"texts ({n}), probabilities ({len(proba)}) and embeddings ({len(embeddings)}) differ"
        )
    return margins(proba) if n else np.zeros(0)


def _first_of_each_text(texts: Sequence[str], order: Iterable[int]) -> list[int]:
    """Positions in `order`, skipping any whose normalised text came earlier (exact duplicates)."""
    seen: set[str] = set()
    unique: list[int] = []
    for i in order:
        key = normalise(texts[i])
        if key not in seen:
            seen.add(key)
            unique.append(i)
    return unique


def select_diverse_uncertain(
    texts: Sequence[str],
    proba: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    pool_factor: float = POOL_FACTOR,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    already: np.ndarray | None = None,
    coverage_share: float = COVERAGE_SHARE,
) -> Selection:
    """Up to `budget` candidates: the most uncertain pool, then greedy k-center on the embeddings.

    Args:
        texts, proba, embeddings: the candidates (rows aligned).
        already: embeddings of predictions already queued for this episode: new picks keep their distance
            from them too, and never duplicate them.
        coverage_share: this share of the budget is picked by k-center over every candidate, not only the
            uncertain pool (after the uncertain picks, farthest from them): coverage of the new traffic for
            when the serving version's margins carry little (a model that has never seen the domain).
    """
    if not 0.0 <= coverage_share <= 1.0:
        raise ValueError(f"coverage_share must be within [0, 1], not {coverage_share}")
    n = len(texts)
    margin = _checked_margins(texts, proba, embeddings)
    if budget <= 0 or n == 0:
        return Selection([], margin, 0, 0)
    emb = _unit(embeddings)
    # exact duplicates (after normalising): keep the most uncertain copy of each text
    unique = _first_of_each_text(texts, np.argsort(margin, kind="stable").tolist())
    exact_dupes = n - len(unique)
    pool_size = max(budget, int(np.ceil(pool_factor * budget)))
    candidates = np.array(unique)  # most uncertain first: the pool is a prefix
    ce = emb[candidates]
    # distance of each candidate to the nearest pick (or already-queued item); start: +inf
    nearest = np.full(len(candidates), np.inf)
    if already is not None and len(already):
        nearest = 1.0 - (ce @ _unit(already).T).max(axis=1)
    available = nearest > 1.0 - duplicate_similarity
    near_dupes = int((~available[:pool_size]).sum())
    in_pool = np.zeros(len(candidates), dtype=bool)
    in_pool[:pool_size] = True
    uncertain_picks = budget - int(round(coverage_share * budget))
    picked: list[int] = []
    while len(picked) < budget:
        scope = available & in_pool if len(picked) < uncertain_picks else available
        if not scope.any():
            if len(picked) < uncertain_picks and available.any():
                uncertain_picks = len(picked)  # the uncertain pool is spent: cover the rest
                continue
            break
        if np.isinf(nearest[scope]).all():
            j = int(np.flatnonzero(scope)[0])  # nothing picked yet: the most uncertain one
        else:
            j = int(np.flatnonzero(scope)[np.argmax(nearest[scope])])
        picked.append(int(candidates[j]))
        available[j] = False
        nearest = np.minimum(nearest, 1.0 - ce @ ce[j])
        newly = available & (nearest <= 1.0 - duplicate_similarity)
        near_dupes += int((newly & in_pool).sum())
        available &= ~newly
    return Selection(picked, margin, min(pool_size, len(candidates)), exact_dupes + near_dupes)


TYPICAL_NEIGHBOURS = 20
"""Typicality of a candidate = 1 / its mean cosine distance to this many nearest candidates."""


def select_typical(
    texts: Sequence[str],
    proba: np.ndarray,
    embeddings: np.ndarray,
    budget: int,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    already: np.ndarray | None = None,
    seed: int = 0,
) -> Selection:
    """Up to `budget` candidates by typicality: k-means into `budget` clusters, the densest one of each.

    TypiClust (Hacohen et al., ICML 2022): with a small budget on a domain the serving version has never
    seen, its margins carry little and k-center picks outliers first; the typical tweet of each region of
    the new traffic teaches more. Clusters are visited largest first, so a cut budget keeps the big ones.
    A candidate within `duplicate_similarity` of a pick or of `already` (queued before) is never picked;
    its cluster then gives its next most typical member.
    """
    from sklearn.cluster import KMeans

    n = len(texts)
    margin = _checked_margins(texts, proba, embeddings)
    if budget <= 0 or n == 0:
        return Selection([], margin, 0, 0)
    unique = _first_of_each_text(texts, range(n))
    skipped = n - len(unique)
    ce = _unit(embeddings)[unique]
    k = min(budget, len(unique))
    similarity = ce @ ce.T
    neighbours = min(TYPICAL_NEIGHBOURS, len(unique) - 1)
    if neighbours > 0:
        # the `neighbours` largest similarities to others (drop self: the largest, 1.0)
        nearest = -np.sort(-similarity, axis=1)[:, 1 : neighbours + 1]
        typicality = 1.0 / np.maximum(1.0 - nearest.mean(axis=1), 1e-6)
    else:
        typicality = np.ones(len(unique))
    clusters = (
        KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(ce)
        if k > 1
        else np.zeros(len(unique), int)
    )
    taken = np.zeros(len(unique), dtype=bool)
    blocked = np.zeros(len(unique), dtype=bool)
    if already is not None and len(already):
        blocked |= (ce @ _unit(already).T).max(axis=1) >= duplicate_similarity
    picked: list[int] = []
    sizes = np.bincount(clusters, minlength=k)
    while len(picked) < budget:
        progress = False
        for c in np.argsort(-sizes, kind="stable").tolist():
            if len(picked) >= budget:
                break
            members = np.flatnonzero((clusters == c) & ~taken & ~blocked)
            if not len(members):
                continue
            j = int(members[np.argmax(typicality[members])])
            picked.append(unique[j])
            taken[j] = True
            newly = ~taken & ~blocked & (similarity[j] >= duplicate_similarity)
            skipped += int(newly.sum())
            blocked |= newly
            progress = True
        if not progress:
            break
    return Selection(picked, margin, len(unique), skipped)


def queued_count(episode_id: str | None, model_name: str, db_url: str | None = None) -> int:
    q = select(func.count()).select_from(LabelingTask).where(LabelingTask.model_name == model_name)
    q = q.where(
        LabelingTask.episode_id.is_(None) if episode_id is None else LabelingTask.episode_id == episode_id
    )
    with get_engine(db_url).connect() as conn:
        return int(conn.execute(q).scalar() or 0)


def queue_candidates(
    model_name: str,
    version: int,
    start: datetime | None,
    end: datetime | None,
    db_url: str | None = None,
    limit: int = 2000,
    strategy: Literal["uncertain", "typical"] = "uncertain",
) -> list[tuple[str, str]]:
    """(prediction id, text) of the served, unlabelled, not yet queued predictions of a version's window:
    the `limit` least confident ones (the logged top-1 probability).

    A busy day's window holds far more predictions than are worth a forward pass and an embedding each;
    the served confidence already ranks them nearly as the margin does (with three classes a low top-1
    probability is a small margin's precondition), so the database does the first cut. For the typical
    strategy (which needs the traffic as it is) the cut is a uniform sample instead: prediction ids are
    random hex, so ordering by them draws one. Pass the same `strategy` to `top_up_queue`."""
    q = (
        select(Prediction.id, Prediction.text)
        .outerjoin(LabelingTask, LabelingTask.prediction_id == Prediction.id)
        .where(
            Prediction.model_name == model_name,
            Prediction.model_version == version,
            Prediction.served.is_(True),
            Prediction.true_label.is_(None),
            Prediction.error.is_(None),
            LabelingTask.id.is_(None),
        )
        .order_by(
            *(
                (Prediction.id,)
                if strategy == "typical"
                else (Prediction.confidence.asc(), Prediction.created_at.desc())
            )
        )
        .limit(limit)
    )
    if start is not None:
        q = q.where(Prediction.created_at >= start)
    if end is not None:
        q = q.where(Prediction.created_at < end)
    with get_engine(db_url).connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(q).all()]


def _queued_texts(episode_id: str | None, model_name: str, db_url: str | None) -> list[str]:
    q = (
        select(Prediction.text)
        .join(LabelingTask, LabelingTask.prediction_id == Prediction.id)
        .where(LabelingTask.model_name == model_name)
        .where(
            LabelingTask.episode_id.is_(None) if episode_id is None else LabelingTask.episode_id == episode_id
        )
    )
    with get_engine(db_url).connect() as conn:
        return [r[0] for r in conn.execute(q).all()]


def top_up_queue(
    model_name: str,
    episode_id: str | None,
    candidates: Sequence[tuple[str, str]],
    predict_proba: Any,
    encode: Any,
    budget: int = LABELING_BUDGET,
    pool_factor: float = POOL_FACTOR,
    duplicate_similarity: float = DUPLICATE_SIMILARITY,
    db_url: str | None = None,
    strategy: Literal["uncertain", "typical"] = "uncertain",
) -> QueueResult:
    """Queue the best of `candidates` for an episode, up to its budget over all its top-ups.

    Args:
        candidates: (prediction id, text), e.g. from `queue_candidates`.
        predict_proba: texts -> probabilities of the served version (its margins rank uncertainty).
        encode: texts -> base-encoder embeddings (diversity and near-duplicates).
        strategy: "uncertain" (`select_diverse_uncertain`) or "typical" (`select_typical`).
    """
    before = queued_count(episode_id, model_name, db_url)
    room = max(0, budget - before)
    result = QueueResult(episode_id, budget, before, 0, len(candidates), 0)
    if room == 0 or not candidates:
        return result
    texts = [t for _, t in candidates]
    proba = np.asarray(predict_proba(texts))
    embeddings = np.asarray(encode(texts))
    queued = _queued_texts(episode_id, model_name, db_url)
    already = np.asarray(encode(queued)) if queued else None
    known = {normalise(t) for t in queued}
    keep = [i for i, t in enumerate(texts) if normalise(t) not in known]
    kept = ([texts[i] for i in keep], proba[keep], embeddings[keep], room)
    sel = (
        select_typical(*kept, duplicate_similarity, already)
        if strategy == "typical"
        else select_diverse_uncertain(*kept, pool_factor, duplicate_similarity, already)
    )
    rows = []
    for rank, j in enumerate(sel.picked, start=before):
        i = keep[j]
        rows.append(
            LabelingTask(
                model_name=model_name,
                episode_id=episode_id,
                prediction_id=candidates[i][0],
                rank=rank,
                margin=float(sel.margins[j]),
            )
        )
    with session_scope(db_url) as s:
        s.add_all(rows)
    result.added = len(rows)
    result.added_ids = [r.prediction_id for r in rows]
    result.duplicates_skipped = sel.duplicates_skipped + (len(texts) - len(keep))
    return result


@dataclass(frozen=True)
class QueueItem:
    prediction_id: str
    episode_id: str | None
    rank: int
    text: str
    predicted_label: str
    confidence: float
    margin: float
    model_version: int
    served_at: datetime
    queued_at: datetime
    true_label: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "episode_id": self.episode_id,
            "rank": self.rank,
            "text": self.text,
            "predicted_label": self.predicted_label,
            "confidence": self.confidence,
            "margin": self.margin,
            "model_version": self.model_version,
            "served_at": self.served_at.isoformat(),
            "queued_at": self.queued_at.isoformat(),
            "true_label": self.true_label,
        }


@dataclass(frozen=True)
class QueuePage:
    total: int
    pending: int
    labelled: int
    items: list[QueueItem]


def read_queue(
    model_name: str,
    episode_id: str | None = None,
    status: str = "pending",
    offset: int = 0,
    limit: int = 50,
    db_url: str | None = None,
) -> QueuePage:
    """A page of a model's labelling queue (one episode's, or all), in selection order.

    Args:
        status: pending (no label yet), labelled, or all.
    """
    if status not in ("pending", "labelled", "all"):
        raise ValueError(f"status must be pending, labelled or all, not {status!r}")
    base = (
        select(LabelingTask, Prediction)
        .join(Prediction, Prediction.id == LabelingTask.prediction_id)
        .where(LabelingTask.model_name == model_name)
    )
    if episode_id is not None:
        base = base.where(LabelingTask.episode_id == episode_id)
    counts = (
        select(
            func.count(),
            func.count(Prediction.true_label),
        )
        .select_from(LabelingTask)
        .join(Prediction, Prediction.id == LabelingTask.prediction_id)
        .where(LabelingTask.model_name == model_name)
    )
    if episode_id is not None:
        counts = counts.where(LabelingTask.episode_id == episode_id)
    page = base
    if status == "pending":
        page = page.where(Prediction.true_label.is_(None))
    elif status == "labelled":
        page = page.where(Prediction.true_label.is_not(None))
    page = page.order_by(LabelingTask.created_at, LabelingTask.rank).offset(offset).limit(limit)
    with session_scope(db_url) as s:
        total, labelled = s.execute(counts).one()
        items = [
            QueueItem(
                prediction_id=t.prediction_id,
                episode_id=t.episode_id,
                rank=t.rank,
                text=p.text,
                predicted_label=p.label,
                confidence=p.confidence,
                margin=t.margin,
                model_version=p.model_version,
                served_at=p.created_at,
                queued_at=t.created_at,
                true_label=p.true_label,
            )
            for t, p in s.execute(page).all()
        ]
    return QueuePage(int(total), int(total) - int(labelled), int(labelled), items)


def queue_progress(model_name: str, episode_id: str | None, db_url: str | None = None) -> tuple[int, int]:
    """(queued, labelled) of an episode's queue."""
    page = read_queue(model_name, episode_id, "all", 0, 0, db_url)
    return page.total, page.labelled


def label_studio_tasks(items: Iterable[QueueItem], model_name: str) -> list[dict[str, Any]]:
    """Queue items as Label Studio tasks (import JSON): the text, the prediction id to come back by, and the
    served version's answer as a pre-annotation, so annotators correct rather than start from nothing."""
    tasks = []
    for item in items:
        tasks.append(
            {
                "data": {
                    "text": item.text,
                    "prediction_id": item.prediction_id,
                    "model_name": model_name,
                    "episode_id": item.episode_id,
                    "rank": item.rank,
                },
                "predictions": [
                    {
                        "model_version": f"v{item.model_version}",
                        "score": round(item.confidence, 4),
                        "result": [
                            {
                                "from_name": LABEL_STUDIO_FROM_NAME,
                                "to_name": LABEL_STUDIO_TO_NAME,
                                "type": "choices",
                                "value": {"choices": [item.predicted_label]},
                            }
                        ],
                    }
                ],
            }
        )
    return tasks


class LabelImportError(ValueError):
    """The import is not Label Studio's task export (nothing was recorded)."""


@dataclass
class ImportResult:
    labelled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # prediction ids not in the log
    skipped: list[dict[str, Any]] = field(default_factory=list)  # tasks without a usable annotation

    def as_dict(self) -> dict[str, Any]:
        return {
            "labelled": len(self.labelled),
            "unknown": self.unknown,
            "skipped": self.skipped,
        }


def parse_label_studio(tasks: Any) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """(prediction id, label) pairs from Label Studio's JSON export, and the tasks skipped with why.

    The latest non-cancelled annotation of a task wins; a task without one (not labelled yet, or skipped
    by the annotator) is reported, not an error. Raises `LabelImportError` when the document is not a
    list of tasks, or a task has no `data.prediction_id` or a label outside the model's classes: then
    nothing is recorded, so a half-imported file never leaves the queue in an unknown state."""
    if not isinstance(tasks, list):
        raise LabelImportError("expected Label Studio's JSON export: a list of tasks")
    pairs: list[tuple[str, str]] = []
    skipped: list[dict[str, Any]] = []
    for n, task in enumerate(tasks):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise LabelImportError(f"task {n}: not a Label Studio task (an object with 'data')")
        pid = task["data"].get("prediction_id")
        if not isinstance(pid, str) or not pid:
            raise LabelImportError(
                f"task {n}: data.prediction_id is missing (export tasks made by GET /mlops/labeling/export)"
            )
        annotations = [
            a
            for a in task.get("annotations") or task.get("completions") or []
            if isinstance(a, dict) and not a.get("was_cancelled")
        ]
        choice = None
        for annotation in reversed(annotations):  # the latest first
            for result in annotation.get("result") or []:
                if isinstance(result, dict) and result.get("type") == "choices":
                    choices = (result.get("value") or {}).get("choices") or []
                    if choices:
                        choice = str(choices[0]).strip().lower()
                        break
            if choice is not None:
                break
        if choice is None:
            skipped.append({"prediction_id": pid, "reason": "no annotation with a choice"})
            continue
        if choice not in LABELS:
            raise LabelImportError(f"task {n} ({pid}): label {choice!r} is not one of {', '.join(LABELS)}")
        pairs.append((pid, choice))
    return pairs, skipped


def import_label_studio(tasks: Any, model_name: str, db_url: str | None = None) -> ImportResult:
    """Record the labels of a Label Studio export as feedback (one transaction: all or nothing)."""
    pairs, skipped = parse_label_studio(tasks)
    result = ImportResult(skipped=skipped)
    if not pairs:
        return result
    with session_scope(db_url) as s:
        rows = {
            p.id: p
            for p in s.execute(
                select(Prediction).where(Prediction.id.in_([pid for pid, _ in pairs]))
            ).scalars()
        }
        now = utcnow()
        for pid, label in pairs:
            row = rows.get(pid)
            if row is None or row.model_name != model_name:
                result.unknown.append(pid)
                continue
            row.true_label = label
            row.feedback_at = now
            result.labelled.append(pid)
    return result


def queue_markdown(model_name: str, episode_id: str | None, page: QueuePage, added: int) -> str:
    """The queue for the Prefect artifact: how far labelling got, and the first items to label."""
    lines = [
        f"# Labelling queue: {model_name}" + (f", episode {episode_id}" if episode_id else ""),
        "",
        f"{page.total} queued ({added} new in this check), {page.labelled} labelled, {page.pending} waiting. "
        "Label them with `POST /mlops/feedback`, or in Label Studio: `GET /mlops/labeling/export` -> "
        "label -> export JSON -> `POST /mlops/labeling/import`.",
    ]
    return "\n".join(lines)


def queue_table(page: QueuePage) -> list[dict[str, Any]]:
    """Rows of the Prefect table artifact."""
    return [
        {
            "rank": i.rank,
            "prediction_id": i.prediction_id,
            "text": i.text[:140],
            "predicted": i.predicted_label,
            "margin": round(i.margin, 3),
            "label": i.true_label or "",
        }
        for i in page.items
    ]

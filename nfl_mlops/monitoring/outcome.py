"""What a monitoring run concludes from its per-version checks: the run's named state, message and result.

The monitoring flow wires the checks; this decides how the run ends, so that a run which decides nothing
says so (`Skipped`), an alarm the episode rule has not yet made an episode is `Alarm`, a new episode is
`EpisodeOpened`, and only an all-clear run is a plain `Completed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

VERSION_KEYS = (
    "model_version",
    "arm",
    "status",
    "n_predictions",
    "drift_share",
    "performance_degraded",
    "episode",
    "events",
    "monitoring_run_id",
)
"""What the run's result keeps of each version's check."""


def window_end(end: datetime | None, scheduled: datetime | None, now: datetime | None = None) -> datetime:
    """A check's window ends at `end`, else at the run's scheduled time (so backfills and late runs judge
    the hour they were scheduled for), else now; always timezone-aware (UTC when naive)."""
    for ts in (end, scheduled):
        if ts is not None:
            return ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return now or datetime.now(UTC)


def check_status(drift_detected: bool, degraded: bool) -> str:
    """One version's verdict: drift | degraded | ok."""
    return "drift" if drift_detected else "degraded" if degraded else "ok"


def summarize(
    outcomes: Sequence[dict[str, Any]],
    closed_episodes: Sequence[Any] = (),
    orphaned_jobs: Sequence[Any] = (),
) -> tuple[str | None, str, dict[str, Any]]:
    """(state name, message, result) of a monitoring run from its version checks (oldest target first).

    State name None means a plain `Completed` (every judged version clear). The result is the first judged
    version's check with `versions` (each check, `VERSION_KEYS`), `events` (all emitted),
    `closed_episodes` and `orphaned_jobs`.
    """
    judged = [o for o in outcomes if o["status"] != "skipped"]
    out = dict(
        judged[0]
        if judged
        else {"status": "skipped", "n_predictions": sum(o.get("n_predictions", 0) for o in outcomes)}
    )
    out.update(
        versions=[{k: o.get(k) for k in VERSION_KEYS} for o in outcomes],
        events=[e for o in outcomes for e in o.get("events", [])],
        closed_episodes=list(closed_episodes),
        orphaned_jobs=list(orphaned_jobs),
    )
    if not judged:
        why = "; ".join(f"v{o['model_version']}: {o['reason']}" for o in outcomes) or "no version served"
        return "Skipped", f"nothing judged ({why})", out
    actions = [(o.get("episode") or {}).get("action") for o in judged]
    message = "; ".join(
        f"v{o['model_version']} {o['status']} (episode: {(o.get('episode') or {}).get('action')})"
        for o in judged
    )
    if "opened" in actions:
        return "EpisodeOpened", message, out
    if any(o["status"] != "ok" for o in judged):
        return "Alarm", message, out
    return None, message, out

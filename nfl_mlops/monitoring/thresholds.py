"""Monitoring thresholds, defined once (settings, DriftConfig and the monitoring flow read them from here).

Drift
-----
Each monitored signal gets a verdict; the window counts as drifted when the share of drifted signals
reaches DRIFT_SHARE_THRESHOLD. Signals: the text descriptors (length in chars and words, share of
words outside the training vocabulary, hashtags, mentions, URLs, NFL entities, topic), the predictions
(label, confidence) and the sentence embeddings of the base encoder.

Descriptor and prediction columns are tested by Evidently's `ValueDrift` with the methods below (the
monitoring flow's choice; `DriftConfig` itself defaults to Evidently's size-dependent choice, see
`drift.py`).

Performance
-----------
Observed metrics (feedback labels) and label-free estimates (calibrated confidences, CBPE-style) are
compared with the version's test metrics; see `performance.py`.
"""

DRIFT_SHARE_THRESHOLD = 0.3
"""Dataset drift when at least this share of monitored signals drifted."""

DRIFT_NUM_METHOD = "wasserstein"
"""Evidently stat test of the numeric signals (descriptors, confidence): Wasserstein distance normed by the
reference's standard deviation. An effect size, so the verdict does not depend on the window size."""

DRIFT_CAT_METHOD = "jensenshannon"
"""Evidently stat test of the categorical signals (topic, predicted label): Jensen-Shannon distance.

Not Evidently's small-reference default (chi-square): that one is a goodness-of-fit test against the
reference's counts taken as exact, so a value the reference never showed (a tweet with 5 mentions)
gives p = 0, and ordinary reference noise gave p = 0.025 on an undrifted airline window."""

DRIFT_COLUMN_METHODS = {
    "n_hashtags": "jensenshannon",
    "n_mentions": "jensenshannon",
    "n_urls": "jensenshannon",
    "n_nfl_entities": "jensenshannon",
}
"""Per-signal overrides: the sparse counts are compared as distributions over their values.

Wasserstein normed by the reference's standard deviation misfires on them: a reference of airline
tweets has almost no NFL entities (std 0.03), so one NFL word in a window of 600 was a normed
distance of 1.75 (20 % false alarms between random halves of airline tweets). Jensen-Shannon on
the same columns: 0 false alarms in 100 random splits (95th percentile 0.03-0.06), 0.34-0.82 on
NFL tweets."""

DRIFT_COLUMN_THRESHOLD: float | None = None
"""One threshold for every column test; None = each test's default (0.1 for both distances above)."""

DRIFT_COLUMN_THRESHOLDS = {"oov_share": 0.25}
"""Per-signal thresholds that override `DRIFT_COLUMN_THRESHOLD`.

The share of words outside the training vocabulary is compared with the reference's test rows, a few
hundred, whose own sampling noise is of the order of 0.1 normed Wasserstein: between random halves of the
airline tweets (400 reference rows, 1,200-row windows, 200 draws) the score's median was 0.09, its 95th
percentile 0.14, its 99th 0.15, so the default 0.1 called a third of no-drift windows drifted
(`bench/false_alarms.py`, signal rates). NFL and Apple tweets score 2.2-2.8 against the same reference."""

DRIFT_MAX_ROWS = 50_000
"""Each side of the descriptor/prediction drift test is sampled down to this many rows (seeded)."""

REFERENCE_MAX_TRAIN_ROWS = 20_000
"""The reference's descriptor distributions use at most this many training texts (plus the test texts)."""

EMBEDDING_SAMPLE_SIZE = 500
"""Texts embedded for embedding drift: stored per version at training time, and sampled per window."""

EMBEDDING_AUC_THRESHOLD = 0.55
"""Embedding drift when a domain classifier tells window from reference with ROC AUC above this (the
smallest effect that counts)...

Evidently's classifier is scored on a random held-out half; under no drift its AUC has a standard
error of about 0.026 with 500 + 500 embeddings (250 + 250 scored) and 0.035 with 200 + 400."""

EMBEDDING_NULL_Z = 2.33
"""...and above chance by this many of those standard errors (a one-sided 1 % test against sampling
error). The threshold of a run is max(EMBEDDING_AUC_THRESHOLD, 0.5 + EMBEDDING_NULL_Z * SE): 0.560 at
500 + 500, 0.583 at 200 + 400; `embeddings.EmbeddingDrift` reports it with the SE."""

PERFORMANCE_METRICS = ("accuracy", "macro_f1")
"""The metrics whose drop is judged; performance is degraded when any of them is.

Both, because they fail differently: a model that predicts mostly the majority class keeps a low
macro-F1 that moves little while its accuracy falls (the label-free estimate on NFL tweets)."""

PERFORMANCE_MAX_DROP = 0.05
"""Performance degraded when a metric is this far (absolute) below its baseline (the version's test metric)..."""

PERFORMANCE_JUDGE_LEVEL = 0.99
"""The degradation verdict needs the two-sided interval at this level of (test metric - window metric),
both bootstrapped, wholly above 0 (besides a point drop above PERFORMANCE_MAX_DROP). Checks repeat every
hour on overlapping windows: at 0.90 a no-drift window was judged degraded in 2.7 % of checks
(`bench/false_alarms.py`, 2,880 checks), each a step towards a false episode."""

PERFORMANCE_CONFIDENCE = 0.90
"""...and the upper end of its two-sided interval at this level is below the test metric (a real drop)."""

MIN_LABELLED = 30
"""Feedback labels needed in a window before observed metrics are judged (else the estimate is)."""

SIGNAL_GROUPS = {
    "n_chars": "length",
    "n_words": "length",
    "n_hashtags": "counts",
    "n_mentions": "counts",
    "n_urls": "counts",
    "predicted_label": "prediction",
    "confidence": "prediction",
}
"""Correlated signals vote once in the drift share: a group counts as drifted when any of its signals did.

Length in characters and in words move together; the sparse counts (hashtags, mentions, URLs) are
all markers of one tweet style; the predicted label and its confidence are two views of one output.
Other signals (oov_share, n_nfl_entities, topic, embedding) are each their own group."""

EPISODE_PERSISTENCE = 2
"""A drift episode opens when this many consecutive checks of a version alarmed (drift or degradation)..."""

EPISODE_STRONG_SHARE = 0.75
"""...or at once when one check's drift share (over signal groups) reaches this."""

EPISODE_CLEAR_CHECKS = 3
"""An open episode closes after this many consecutive clear checks (or when the version stops serving)."""

RETRAIN_COOLDOWN_MINUTES = 60.0
"""An automatic retraining without an episode (the schedule) is not started again within this many minutes."""

RETRAIN_DAILY_BUDGET = 3
"""At most this many automatic retrainings per 24 hours (failed ones count)."""

RETRAIN_BACKOFF_BASE_MINUTES = 30.0
"""After the n-th failed automatic retraining the next waits base * 2^(n-1) minutes..."""

RETRAIN_BACKOFF_MAX_MINUTES = 24 * 60.0
"""...at most this long."""

RETRAIN_MAX_ATTEMPTS = 4
"""An episode gives up starting retrainings after this many failed ones (a person looks)."""

RETRAIN_MAX_OPEN_HOURS = 12.0
"""A retraining job still `scheduled`/`running` after this many hours, with no run state that says otherwise,
is ended `failed` (its run was lost); a run that Prefect shows ended (e.g. `Crashed`) ends it at once."""

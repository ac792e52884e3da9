"""Monitoring thresholds, defined once (settings and DriftConfig read them from here)."""

DRIFT_SHARE_THRESHOLD = 0.3
"""Dataset drift when at least this share of monitored columns drifted."""

RETRAIN_COOLDOWN_MINUTES = 60.0
"""An automatic retraining is not started again within this many minutes of the last one."""

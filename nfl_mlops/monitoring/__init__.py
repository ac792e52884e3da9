"""Monitoring: reference profiles, drift, performance, the Evidently workspace, retraining triggers.

- `reference`: the profile each version is monitored against (built at training time);
- `drift`: Evidently `ValueDrift` per descriptor/prediction column, the per-signal verdicts and share;
- `embeddings`: base-encoder embeddings of samples and embedding drift (domain classifier AUC);
- `performance`: observed metrics from feedback, the label-free (CBPE-style) estimate, the verdict;
- `monitor`: one check of a window, stage by stage (what the monitoring flow's tasks call);
- `workspace`: the local Evidently workspace (`evidently ui`), one project per model;
- `scenarios`: validation windows of real drift from the corpus;
- `window`: what a check judges: per serving version and arm, its predictions since its rollout began;
- `episodes`: drift episodes (the opening rule, one retraining per episode by compare-and-set, back-off);
- `simulation`: repeated checks on simulated corpus traffic (false episodes, detection delay; bench);
- `feedback`, `triggers`: prediction-log windows and feedback; the schedule's cooldown, back-off and budget;
- `thresholds`: every threshold above, defined once.
"""

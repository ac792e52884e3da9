"""How far the NFL labels themselves let any model go (issue 13 item 1: "if the NFL labels limit what is
reachable, show it"). Cheap: TF-IDF + logistic regression only, about a minute on 2 cores.

    .venv/bin/python bench/nfl_labels.py

1. **Label consistency**: among raw rows whose texts are the same after normalising (case, links, mentions,
   punctuation), the share of groups whose copies carry different labels, per source (topic). A noisy
   labelling process shows up as conflicting copies of one tweet.
2. **An in-domain ceiling for a linear model**: TF-IDF + LR trained on NFL rows only, 5-fold cross-validated
   on the cleaned, deduplicated NFL rows, beside the same for the airline rows (a source with clean labels).
3. **A learning curve on NFL labels**: the same model trained on 100 .. all NFL training rows of one split,
   scored on the same held-out NFL rows: how many labels buy how much.
4. **Disagreements to read by hand**: the held-out NFL rows where the cross-validated model is confident
   (p >= 0.8) and the label disagrees, a seeded sample, printed.

Writes bench/results/nfl_labels.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, class_weight="balanced"),
    )


def consistency(raw: Any) -> dict[str, Any]:
    from nfl_mlops.data.corpus import clean_texts, normalize_texts, topics_of

    df = raw.copy()
    df["text"] = clean_texts(df["text"])
    df = df[df["text"] != ""]
    df["topic"] = topics_of(df["text"])
    df["norm"] = normalize_texts(df["text"])
    df = df[df["norm"] != ""]
    out = {}
    for topic, g in df.groupby("topic"):
        groups = g.groupby("norm")["label"].agg(["nunique", "size"])
        repeated = groups[groups["size"] > 1]
        out[str(topic)] = {
            "rows": int(len(g)),
            "repeated_groups": int(len(repeated)),
            "conflicting_share": round(float((repeated["nunique"] > 1).mean()), 3) if len(repeated) else None,
        }
    return out


def cv_ceiling(frame: Any, folds: int = 5) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = frame["label"].to_numpy()
    pred = cross_val_predict(
        _model(), frame["text"].tolist(), y, cv=StratifiedKFold(folds, shuffle=True, random_state=0)
    )
    return {
        "rows": int(len(frame)),
        "accuracy": round(float(accuracy_score(y, pred)), 3),
        "macro_f1": round(float(f1_score(y, pred, average="macro")), 3),
        "per_class_f1": {
            c: round(float(f), 3)
            for c, f in zip(
                sorted(set(y)), f1_score(y, pred, average=None, labels=sorted(set(y))), strict=True
            )
        },
    }


def main() -> int:
    from sklearn.metrics import f1_score
    from sklearn.model_selection import train_test_split

    from nfl_mlops.data import load_corpus, prepare, select

    raw = load_corpus()
    corpus = prepare(raw)
    nfl = select(corpus, topics_include=["nfl"], seed=42)
    airline = select(corpus, topics_include=["airline"], seed=42)
    result: dict[str, Any] = {"consistency": consistency(raw)}
    result["cv_ceiling"] = {"nfl": cv_ceiling(nfl), "airline": cv_ceiling(airline)}

    train, test = train_test_split(nfl, test_size=0.2, random_state=0, stratify=nfl["label"])
    curve = []
    for n in [100, 200, 400, 800, 1600, 3200, len(train)]:
        part = train.sample(n=min(n, len(train)), random_state=0)
        model = _model().fit(part["text"].tolist(), part["label"].tolist())
        f1 = f1_score(test["label"], model.predict(test["text"].tolist()), average="macro")
        curve.append({"labels": int(len(part)), "nfl_test_macro_f1": round(float(f1), 3)})
    result["learning_curve"] = curve

    model = _model().fit(train["text"].tolist(), train["label"].tolist())
    proba = model.predict_proba(test["text"].tolist())
    classes = list(model.classes_)
    pred = np.array(classes)[proba.argmax(axis=1)]
    confident = (proba.max(axis=1) >= 0.8) & (pred != test["label"].to_numpy())
    rows = test[confident].assign(predicted=pred[confident], p=proba.max(axis=1)[confident])
    sample = rows.sample(n=min(12, len(rows)), random_state=1)
    result["confident_disagreements"] = {
        "share_of_test": round(float(confident.mean()), 3),
        "sample": [
            {"text": r.text, "label": r.label, "predicted": r.predicted, "p": round(float(r.p), 2)}
            for r in sample.itertuples()
        ],
    }
    out = ROOT / "bench" / "results" / "nfl_labels.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "confident_disagreements"}, indent=1))
    print(
        f"confident disagreements: {result['confident_disagreements']['share_of_test']:.1%} of the NFL test rows"
    )
    for r in result["confident_disagreements"]["sample"]:
        print(f"  label {r['label']:8s} model {r['predicted']:8s} p={r['p']:.2f}  {r['text'][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

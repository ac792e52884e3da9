"""The labelling queue over real HTTP: an episode's queue paged in selection order, exported as Label Studio
tasks, labels imported back (all or nothing) or sent one by one as feedback; bad requests get a 4xx."""

from __future__ import annotations

import pytest

from tests.api.helpers import MODEL

TWEETS = [
    f"{who} {what} tonight #{tag}"
    for who, tag in (("Brady", "pats"), ("Wilson", "seahawks"), ("Belichick", "nfl"))
    for what in (
        "was unreal",
        "threw it away",
        "is on the field",
        "made my week",
        "should be suspended",
        "talks to the press",
        "and the refs",
    )
]


@pytest.fixture()
def queued(client, on_v1, main_settings, tiny_model_dir):
    """The served tweets, queued for an episode of the test's own by the selection monitoring uses (real
    model, real encoder)."""
    import uuid

    from nfl_mlops.modeling.predictor import SentimentModel
    from nfl_mlops.monitoring import labeling as lb
    from nfl_mlops.monitoring.embeddings import get_encoder

    ids = []
    for start in range(0, len(TWEETS), 16):
        r = client.post("/mlops/predict/sentiment/batch", json={"texts": TWEETS[start : start + 16]})
        assert r.status_code == 200, r.text
        ids += [p["prediction_id"] for p in r.json()["predictions"]]
    client.get("/mlops/lineage/" + ids[-1])  # the log is flushed: the rows are in the state DB
    served = set(ids)
    candidates = [
        c for c in lb.queue_candidates(MODEL, 1, None, None, main_settings.db_url) if c[0] in served
    ]
    assert len(candidates) == len(TWEETS)
    result = lb.top_up_queue(
        MODEL,
        f"ep-{uuid.uuid4().hex[:12]}",
        candidates,
        SentimentModel.load(tiny_model_dir).predict_proba,
        get_encoder(main_settings.base_model).encode,
        budget=12,
        db_url=main_settings.db_url,
    )
    assert result.added == 12
    return result


def test_the_queue_pages_in_selection_order_and_label_studio_labels_come_back(client, queued):
    EPISODE = queued.episode_id  # noqa: N806
    r = client.get("/mlops/labeling/queue", params={"episode_id": EPISODE, "limit": 5})
    assert r.status_code == 200, r.text
    page = r.json()
    assert (page["total"], page["pending"], page["labelled"]) == (12, 12, 0)
    assert [i["rank"] for i in page["items"]] == [0, 1, 2, 3, 4]
    assert all(i["text"] in TWEETS and i["true_label"] is None for i in page["items"])
    rest = client.get(
        "/mlops/labeling/queue", params={"episode_id": EPISODE, "offset": 5, "limit": 50}
    ).json()
    assert [i["rank"] for i in rest["items"]] == list(range(5, 12))

    tasks = client.get("/mlops/labeling/export", params={"episode_id": EPISODE}).json()
    assert len(tasks) == 12 and {t["data"]["prediction_id"] for t in tasks} == set(queued.added_ids)
    assert "<Choices" in client.get("/mlops/labeling/config").json()["label_config"]
    for task, label in zip(tasks[:3], ("Positive", "negative", "neutral"), strict=True):
        task["annotations"] = [
            {"result": [{"type": "choices", "from_name": "sentiment", "value": {"choices": [label]}}]}
        ]
    r = client.post("/mlops/labeling/import", json=tasks)
    assert r.status_code == 200, r.text
    assert r.json()["labelled"] == 3 and len(r.json()["skipped"]) == 9 and r.json()["unknown"] == []

    # one more by the feedback endpoint: the queue counts it too
    pending = client.get("/mlops/labeling/queue", params={"episode_id": EPISODE}).json()
    assert pending["pending"] == 9 and len(pending["items"]) == 9
    first = pending["items"][0]["prediction_id"]
    assert (
        client.post("/mlops/feedback", json={"prediction_id": first, "label": "neutral"}).status_code == 200
    )
    done = client.get("/mlops/labeling/queue", params={"episode_id": EPISODE, "status": "labelled"}).json()
    assert done["labelled"] == 4 and {i["true_label"] for i in done["items"]} == {
        "positive",
        "negative",
        "neutral",
    }


def test_bad_labelling_requests_get_a_clear_4xx_and_record_nothing(client, queued):
    EPISODE = queued.episode_id  # noqa: N806
    tasks = client.get("/mlops/labeling/export", params={"episode_id": EPISODE}).json()
    tasks[0]["annotations"] = [{"result": [{"type": "choices", "value": {"choices": ["neutral"]}}]}]
    tasks[1]["annotations"] = [{"result": [{"type": "choices", "value": {"choices": ["furious"]}}]}]
    r = client.post("/mlops/labeling/import", json=tasks)
    assert r.status_code == 422 and "'furious' is not one of" in r.json()["detail"]
    assert client.get("/mlops/labeling/queue", params={"episode_id": EPISODE}).json()["labelled"] == 0

    r = client.post("/mlops/labeling/import", json=[{"data": {"text": "no id"}}])
    assert r.status_code == 422 and "prediction_id is missing" in r.json()["detail"]
    r = client.post("/mlops/labeling/import", json={"tasks": []})
    assert r.status_code == 422
    r = client.post(
        "/mlops/labeling/import", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    for params in ({"status": "done"}, {"limit": 0}, {"limit": 100000}, {"offset": -1}):
        r = client.get("/mlops/labeling/queue", params=params)
        assert r.status_code == 422, (params, r.text)
    assert client.get("/mlops/labeling/queue", params={"episode_id": "none-such"}).json()["total"] == 0

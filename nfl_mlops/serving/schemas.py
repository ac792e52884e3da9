"""Request and response models of the /mlops API (every field described; they make the OpenAPI docs)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictInt, field_validator, model_validator

from nfl_mlops.retraining import RetrainingJobOut, TriggerCheckOut  # noqa: F401 (re-exported)
from nfl_mlops.rollout.records import ABTestOut, ArmStatsOut, DeploymentOut, VerdictOut  # noqa: F401 (re-exported)
from nfl_mlops.rollout.strategies import ABTestParams, CanaryParams, ShadowParams, Strategy
from nfl_mlops.tracking.records import ExperimentOut, LogMetricsOut  # noqa: F401 (re-exported)

Label = Literal["negative", "neutral", "positive"]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
"""A model or experiment name: letters, digits, `.`, `_`, `-` (it becomes a folder name)."""
VersionRef = Annotated[
    StrictInt | Annotated[str, Field(min_length=1, max_length=100)],
    Field(description="Version number (3 or '3'), 'v3' or an alias such as 'champion' or 'challenger'."),
]
MetricName = Annotated[str, Field(min_length=1, max_length=200)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Metrics = Annotated[dict[MetricName, Finite], Field(max_length=500)]


def _finite_json(value: Any, where: str = "value") -> Any:
    """Reject NaN/Infinity anywhere in a JSON value (they are not JSON and break PostgreSQL JSON columns)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite_json(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_json(v, f"{where}[{i}]")
    return value


def _clean_strings(value: Any, where: str = "body", nul_ok: frozenset[str] = frozenset()) -> None:
    """Reject lone surrogates anywhere in a request (keys included): they have no UTF-8 form to store or
    answer with. NUL characters too, except in the top-level fields `nul_ok` (the texts to score: a tweet
    with a NUL is still a text, stored with U+FFFD in its place since PostgreSQL text cannot hold NUL)."""
    if isinstance(value, str):
        if "\x00" in value and where not in nul_ok:
            raise ValueError(f"{where} contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"{where} is not valid Unicode: a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                f"{exc.start}; send the character itself or its surrogate pair"
            ) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _clean_strings(k, f"{where} key")
            inner = f"{where}.{k}" if isinstance(k, str) and k.isprintable() else where
            _clean_strings(v, inner, nul_ok)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            # an item of a list field inherits the field's NUL rule
            item = f"{where}[{i}]"
            _clean_strings(v, item, (nul_ok | {item}) if where in nul_ok else nul_ok)


class _Request(BaseModel):
    """Base of request bodies: no lone surrogates, no NUL characters (but in the texts to score), no
    NaN/Infinity."""

    model_config = ConfigDict(allow_inf_nan=False)
    nul_ok: ClassVar[frozenset[str]] = frozenset()  # top-level fields that may carry NUL (body.<name>)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        _clean_strings(data, "body", frozenset(f"body.{f}" for f in cls.nul_ok))
        return data


class _Strict(_Request):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# Predictions
class PredictRequest(_Request):
    nul_ok: ClassVar[frozenset[str]] = frozenset({"text"})
    text: str = Field(
        ..., description="The tweet to score.", examples=["Brady is the GOAT, what a comeback!"]
    )
    key: str | None = Field(
        None,
        max_length=200,
        description="Sticky routing key (e.g. a user id): the same key always gets the same "
        "A/B or canary arm.",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be empty or only whitespace")
        return v


class BatchPredictRequest(_Request):
    nul_ok: ClassVar[frozenset[str]] = frozenset({"texts"})
    texts: list[str] = Field(..., min_length=1, description="Tweets to score, in order.")
    key: str | None = Field(
        None, max_length=200, description="Sticky routing key for A/B tests and canaries."
    )

    @field_validator("texts")
    @classmethod
    def _no_blank(cls, v: list[str]) -> list[str]:
        blank = [i for i, t in enumerate(v) if not t.strip()]
        if blank:
            raise ValueError(f"texts must not be empty or only whitespace (items {blank[:10]})")
        return v


class PredictionOut(BaseModel):
    prediction_id: str = Field(..., description="Id of the logged prediction; send feedback with it.")
    label: Label = Field(..., description="The predicted sentiment.")
    confidence: float = Field(..., ge=0, le=1, description="Probability of the predicted label.")
    scores: dict[str, float] = Field(..., description="Probability of every label.")
    model_version: int = Field(..., description="The model version that answered.")
    arm: str = Field(..., description="Rollout arm that answered (stable, candidate, a, b).")
    latency_ms: float = Field(..., description="Time spent answering, in milliseconds.")


class BatchPredictionOut(BaseModel):
    request_id: str = Field(..., description="Id shared by the batch's logged predictions.")
    model_version: int = Field(..., description="The model version that answered.")
    predictions: list[PredictionOut] = Field(..., description="One prediction per text, in order.")


class FeedbackRequest(_Request):
    prediction_id: str = Field(..., max_length=64, description="The id a prediction response returned.")
    label: Label = Field(..., description="The true sentiment.")


class FeedbackOut(BaseModel):
    prediction_id: str = Field(..., description="The labelled prediction.")
    label: Label = Field(..., description="The recorded true label.")
    recorded: bool = Field(..., description="Always true; an unknown id answers 404.")


# Explanations
class ExplainRequest(PredictRequest):
    version: StrictInt | None = Field(
        None,
        ge=1,
        description="Explain on this version (one this service has loaded: the rollout's arms and the warm "
        "previous version) instead of the one the rollout routes the request to.",
    )


class TokenAttributionOut(BaseModel):
    token: str = Field(
        ..., description="A word-level piece: a word, @mention, #hashtag, URL or punctuation run."
    )
    start: int = Field(..., ge=0, description="Offset of its first character in the text.")
    end: int = Field(..., ge=0, description="Offset after its last character: text[start:end] == token.")
    attribution: float = Field(
        ...,
        description="Probability of the predicted label minus its probability without this piece: positive "
        "when the piece supports the label.",
    )


class ExplanationOut(BaseModel):
    model_version: int = Field(..., description="The version that was explained (the one that would answer).")
    arm: str | None = Field(
        None, description="Rollout arm the request was routed to (null: `version` was given)."
    )
    backend: str = Field(..., description="Runtime that scored it (torch, onnx, onnx-int8).")
    method: Literal["occlusion"] = Field("occlusion", description="How attributions were computed.")
    label: Label = Field(..., description="The predicted sentiment of the whole text.")
    probabilities: dict[str, float] = Field(..., description="Probability of every label for the whole text.")
    tokens: list[TokenAttributionOut] = Field(..., description="Every piece of the text, in order.")
    latency_ms: float = Field(..., description="Time spent explaining, in milliseconds.")


# Models
class RegisterModelRequest(_Strict):
    model_name: Name = Field(..., description="Registered model name; a new version is added to it.")
    model_path: str = Field(
        ...,
        min_length=1,
        max_length=4096,
        description="Folder on the API host in Hugging Face layout (config.json, "
        "model.safetensors, tokenizer files) with labels negative/neutral/positive.",
    )
    model_type: Literal["sentiment_analysis"] = Field("sentiment_analysis", description="Kind of model.")
    metrics: Metrics = Field(default_factory=dict, description='Evaluation metrics, e.g. {"accuracy": 0.87}.')
    params: dict[str, JsonValue] = Field(
        default_factory=dict,
        max_length=200,
        description="Hyperparameters or other settings the model was made with.",
    )
    description: str | None = Field(None, max_length=5000, description="What this version is.")

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_json(v, "params")


class ModelVersionOut(BaseModel):
    model_id: str = Field(..., description="Registered model name.")
    version: int = Field(..., description="Version number (1, 2, ...).")
    status: str = Field(..., description="ready (servable), rejected (kept for the record) or archived.")
    aliases: list[str] = Field(..., description="Aliases on this version (champion, challenger).")
    path: str = Field(..., description="Folder of the version in the registry.")
    artifact_uri: str | None = Field(
        None,
        description="Where the version's files are kept (file://, s3://, hf://; MLOPS_ARTIFACT_URI); every "
        "consumer loads them through a local cache verified against their sha256.",
    )
    model_type: str = Field("sentiment_analysis", description="Kind of model.")
    metrics: dict[str, Any] = Field(..., description="Evaluation metrics.")
    params: dict[str, Any] = Field(..., description="Training parameters.")
    lineage: dict[str, Any] = Field(..., description="Dataset, tracker run, flow runs, git sha, base model.")
    description: str | None = Field(None, description="What this version is.")
    reason: str | None = Field(None, description="Why it was rejected, when it was.")
    created_at: datetime = Field(..., description="When it was registered.")
    runtimes: dict[str, Any] = Field(
        default_factory=dict,
        description="Inference variants of the version (torch, onnx, onnx-int8): admitted or not, with the "
        "parity checks' numbers (MLOPS_INFERENCE_BACKEND=auto serves the fastest admitted).",
    )


# Deployments
class DeployRequest(_Strict):
    model_id: str = Field(..., max_length=200, description="Registered model name.")
    model_version: VersionRef
    environment: str = Field("production", min_length=1, max_length=50, description="Target environment.")
    strategy: Strategy = Field(
        Strategy.BLUE_GREEN,
        description="blue_green: all traffic at once. canary: traffic steps held until gates pass. "
        "ab_test: split by percentage, winner by significance test. shadow: a copy of "
        "traffic, answers logged and never returned.",
    )
    reason: str | None = Field(
        None, max_length=500, description="Why (recorded in the deployment's history)."
    )
    canary: CanaryParams | None = Field(None, description="Canary settings (strategy canary).")
    shadow: ShadowParams | None = Field(None, description="Shadow settings (strategy shadow).")
    ab_test: ABTestParams | None = Field(None, description="A/B settings (strategy ab_test).")
    traffic_split: float | None = Field(
        None,
        gt=0,
        lt=100,
        description="ab_test: percent of traffic on this version (B); shortcut for ab_test.traffic_split.",
    )
    duration_days: float | None = Field(
        None, gt=0, le=365, description="ab_test: how long the test runs; shortcut for ab_test.duration_days."
    )
    test_name: str | None = Field(
        None, min_length=1, max_length=200, description="ab_test: name of the test."
    )

    @model_validator(mode="after")
    def _settings_match_strategy(self) -> DeployRequest:
        given = {name for name in ("canary", "shadow", "ab_test") if getattr(self, name) is not None}
        if self.traffic_split is not None or self.duration_days is not None or self.test_name is not None:
            given.add("ab_test")
        wrong = given - {self.strategy}
        if wrong:
            raise ValueError(f"settings for {', '.join(sorted(wrong))} given with strategy {self.strategy}")
        return self

    def strategy_params(self) -> CanaryParams | ShadowParams | ABTestParams | None:
        if self.strategy == "canary":
            return self.canary or CanaryParams()
        if self.strategy == "shadow":
            return self.shadow or ShadowParams()
        if self.strategy == "ab_test":
            base = self.ab_test or ABTestParams()
            update = {
                k: v
                for k, v in (("traffic_split", self.traffic_split), ("duration_days", self.duration_days))
                if v is not None
            }
            return base.model_copy(update=update)
        return None


class RollbackRequest(_Strict):
    reason: str = Field("manual rollback", max_length=500, description="Why (recorded in the history).")


# A/B tests
class CreateABTestRequest(_Strict):
    test_name: str = Field(
        ..., min_length=1, max_length=200, description="Name of the test (unique while running)."
    )
    model_a_id: str = Field(..., max_length=200, description="Registered model of arm A (the control).")
    model_a_version: VersionRef
    model_b_id: str = Field(
        ...,
        max_length=200,
        description="Registered model of arm B; the same model as A (the API serves versions of one model).",
    )
    model_b_version: VersionRef
    traffic_split: float = Field(
        ABTestParams().traffic_split, gt=0, lt=100, description="Percent of traffic on B."
    )
    duration_days: float = Field(
        ABTestParams().duration_days, gt=0, le=365, description="How long the test runs."
    )
    min_samples: int = Field(
        ABTestParams().min_samples,
        ge=1,
        le=10_000_000,
        description="Feedback-labelled predictions per arm before a winner is declared.",
    )
    alpha: float = Field(
        ABTestParams().alpha, gt=0, lt=0.5, description="Significance level (two-sided z-test)."
    )
    promote_winner: bool = Field(
        ABTestParams().promote_winner, description="When the test ends and B won, move all traffic to B."
    )
    environment: str = Field("production", min_length=1, max_length=50, description="Environment.")
    check_seconds: float = Field(
        ABTestParams().check_seconds,
        gt=0,
        le=86400,
        description="How often the API checks whether the test is over.",
    )

    def params(self) -> ABTestParams:
        return ABTestParams(
            traffic_split=self.traffic_split,
            duration_days=self.duration_days,
            min_samples=self.min_samples,
            alpha=self.alpha,
            promote_winner=self.promote_winner,
            check_seconds=self.check_seconds,
        )


# Experiments
class StartExperimentRequest(_Strict):
    experiment_name: str = Field(..., min_length=1, max_length=200, description="Name of the run.")
    config: dict[str, JsonValue] = Field(
        default_factory=dict, max_length=500, description="Hyperparameters; secret-looking keys are dropped."
    )
    tags: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=50, description="Tags."
    )

    @field_validator("config")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _finite_json(v, "config")


class LogMetricsRequest(_Strict):
    experiment_id: str = Field(..., max_length=64, description="The id `POST /experiments` returned.")
    metrics: Metrics = Field(..., min_length=1, description='Scalar metrics, e.g. {"train_loss": 0.15}.')
    step: int | None = Field(None, ge=0, le=2**31 - 1, description="Training step or epoch.")


class FinishExperimentRequest(_Strict):
    metrics: Metrics = Field(default_factory=dict, description="Final metrics (the run's summary).")
    status: Literal["finished", "failed"] = Field("finished", description="How the run ended.")


# Labelling
class LabelingItemOut(BaseModel):
    prediction_id: str
    episode_id: str | None = Field(None, description="The episode that queued it.")
    rank: int = Field(description="Selection order within the episode (0 = the first picked).")
    text: str
    predicted_label: str = Field(description="What the served version answered.")
    confidence: float
    margin: float = Field(description="Top-1 minus top-2 probability (small = the model was unsure).")
    model_version: int
    served_at: datetime
    queued_at: datetime
    true_label: str | None = Field(None, description="The label, once given.")


class LabelingQueueOut(BaseModel):
    model_name: str
    episode_id: str | None
    status: Literal["pending", "labelled", "all"]
    total: int = Field(description="Queued predictions (of the episode, or of every episode).")
    pending: int
    labelled: int
    offset: int
    limit: int
    items: list[LabelingItemOut]


class LabelImportOut(BaseModel):
    labelled: int = Field(description="Tasks whose label was recorded as feedback.")
    unknown: list[str] = Field(description="Prediction ids not in this model's prediction log.")
    skipped: list[dict[str, str]] = Field(description="Tasks without a usable annotation, with why.")


# Retraining
class RetrainRequest(_Strict):
    model_name: str | None = Field(
        None, max_length=200, description="Model to retrain; default the served model."
    )
    reason: str = Field(
        "manual", min_length=1, max_length=500, description="Why (e.g. performance_degradation)."
    )
    config: dict[str, JsonValue] = Field(
        default_factory=dict,
        max_length=50,
        description='Training overrides on top of the champion\'s recipe, e.g. {"epochs": 5, '
        '"learning_rate": 1e-5} (fields of TrainParams).',
    )
    strategy: Literal["blue_green", "canary", "shadow"] | None = Field(
        None, description="Rollout strategy of a challenger that passes (default the retraining flow's)."
    )

    @field_validator("config")
    @classmethod
    def _train_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        from nfl_mlops.modeling.params import TrainParams

        unknown = sorted(set(v) - set(TrainParams.model_fields))
        if unknown:
            raise ValueError(
                f"unknown training settings {unknown}; known: {sorted(TrainParams.model_fields)}"
            )
        TrainParams.model_validate(v)  # types and ranges
        return _finite_json(v, "config")

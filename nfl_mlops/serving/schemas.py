"""Request and response models of the /mlops API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

Label = Literal["negative", "neutral", "positive"]


class PredictRequest(BaseModel):
    text: str = Field(..., description="The tweet to score.", examples=["Brady is the GOAT, what a comeback!"])
    key: str | None = Field(None, max_length=200, description="Sticky routing key (e.g. a user id) for A/B tests.")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("text must not be empty or only whitespace")
        return v


class BatchPredictRequest(BaseModel):
    texts: list[str] = Field(..., min_length=1, description="Tweets to score, in order.")
    key: str | None = Field(None, max_length=200, description="Sticky routing key for A/B tests.")

    @field_validator("texts")
    @classmethod
    def _no_blank(cls, v: list[str]) -> list[str]:
        blank = [i for i, t in enumerate(v) if not t.strip()]
        if blank:
            raise ValueError(f"texts must not be empty or only whitespace (items {blank[:10]})")
        return v


class PredictionOut(BaseModel):
    prediction_id: str = Field(..., description="Id of the logged prediction; send feedback with it.")
    label: Label
    confidence: float = Field(..., ge=0, le=1)
    scores: dict[str, float]
    model_version: int
    arm: str = Field(..., description="Rollout arm that answered (stable, candidate, a, b).")
    latency_ms: float


class BatchPredictionOut(BaseModel):
    request_id: str
    model_version: int
    predictions: list[PredictionOut]


class FeedbackRequest(BaseModel):
    prediction_id: str = Field(..., description="The id a prediction response returned.")
    label: Label = Field(..., description="The true sentiment.")


class ModelVersionOut(BaseModel):
    model_id: str
    version: int
    status: str
    aliases: list[str]
    path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    lineage: dict[str, Any]
    description: str | None
    reason: str | None
    created_at: datetime


class DeployRequest(BaseModel):
    model_id: str = Field(..., description="Registered model name.")
    model_version: StrictInt | str = Field(
        ..., description="Version number (3 or '3'), 'v3' or an alias such as 'challenger'.")
    environment: str = Field("production", max_length=50)
    strategy: Literal["blue_green"] = Field("blue_green", description="Rollout strategy.")


class RollbackRequest(BaseModel):
    reason: str = Field("manual rollback", max_length=500)


class DeploymentOut(BaseModel):
    deployment_id: str
    model_id: str
    environment: str
    model_version: int
    previous_version: int | None
    strategy: str
    status: str
    arms: dict[str, Any]
    reason: str | None
    history: list[Any]
    created_at: datetime
    updated_at: datetime

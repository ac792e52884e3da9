"""What a training run hands to registration."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Candidate(BaseModel):
    """A trained, evaluated model that is not registered yet."""

    model_name: str
    model_dir: str = Field(
        ..., description="Hugging Face folder with weights, tokenizer and reference profile."
    )
    dataset_dir: str = Field(..., description="The immutable training dataset (Parquet splits + manifest).")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Per evaluation set: accuracy, macro-F1, ..."
    )
    baseline_metrics: dict[str, Any] = Field(
        default_factory=dict, description="The TF-IDF baseline on the same sets."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Data and training parameters.")
    lineage: dict[str, Any] = Field(
        default_factory=dict, description="Dataset version, tracker run, flow run, git sha, ..."
    )


class RegistrationResult(BaseModel):
    model_name: str
    version: int
    status: str  # ready | rejected
    passed: bool
    reasons: list[str]
    champion_version: int | None
    comparisons: dict[str, Any] = Field(default_factory=dict)

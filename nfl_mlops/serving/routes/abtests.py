"""A/B tests: start one (two versions, split by percentage, sticky per key), read its statistics and verdict."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from nfl_mlops.rollout import abtest, actions
from nfl_mlops.rollout.records import ab_out
from nfl_mlops.serving import schemas as sc
from nfl_mlops.serving.routes.deployments import ERRORS, start
from nfl_mlops.serving.routes.deps import require_api_key, require_read_key, service, settings
from nfl_mlops.serving.routes.models import resolve
from nfl_mlops.serving.service import PredictionService

router = APIRouter(tags=["ab-tests"], dependencies=[Depends(require_read_key)])


@router.post(
    "/ab-tests",
    response_model=sc.ABTestOut,
    status_code=201,
    responses=ERRORS,
    dependencies=[Depends(require_api_key)],
    summary="Start an A/B test",
)
async def create_ab_test(
    body: sc.CreateABTestRequest, svc: PredictionService = Depends(service), cfg: Any = Depends(settings)
) -> sc.ABTestOut:
    """Split traffic between version A and version B of one model (percent on B = `traffic_split`),
    sticky per request `key`. Outcomes come from feedback labels; `GET /ab-tests/{id}` shows the
    statistics and the verdict; when `duration_days` is over, B takes all traffic if it won, else A."""
    try:
        abtest.check_pair(body.model_a_id, body.model_b_id)
        a = await asyncio.to_thread(resolve, svc, body.model_a_id, body.model_a_version)
        b = await asyncio.to_thread(resolve, svc, body.model_b_id, body.model_b_version)
        abtest.check_pair(a.model_name, b.model_name, a.version, b.version)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if a.model_name == svc.model_name and body.environment == svc.environment:  # A serves here too: warm it
        try:
            await asyncio.to_thread(
                actions.check_servable,
                svc.registry,
                a.model_name,
                a.version,
                lambda info: svc.ensure_loaded(info.version),
            )
        except actions.NotServable as exc:
            raise HTTPException(422, str(exc)) from exc
    r = await start(
        svc,
        cfg,
        b.model_name,
        b.version,
        "ab_test",
        body.environment,
        body.params(),
        f"A/B test {body.test_name}",
        test_name=body.test_name,
        version_a=a.version,
    )
    test = await asyncio.to_thread(abtest.ab_test_for_rollout, r.id, cfg.db_url)
    if test is None:  # start_rollout makes the record with the rollout
        raise HTTPException(409, f"deployment {r.id} has no A/B test record")
    return await asyncio.to_thread(ab_out, test, cfg.db_url)


@router.get("/ab-tests", response_model=list[sc.ABTestOut], summary="List A/B tests")
async def list_ab_tests(
    cfg: Any = Depends(settings),
    model_id: str | None = Query(None, max_length=200, description="Only this model."),
    limit: int = Query(50, ge=1, le=500, description="Newest first, at most this many."),
) -> list[sc.ABTestOut]:
    """A/B tests, newest first, with their current statistics."""
    tests = await asyncio.to_thread(abtest.list_ab_tests, model_id, cfg.db_url, limit)
    return [await asyncio.to_thread(ab_out, t, cfg.db_url) for t in tests]


@router.get(
    "/ab-tests/{test_id}",
    response_model=sc.ABTestOut,
    summary="Statistics and verdict of an A/B test",
    responses={404: {"description": "Unknown test"}},
)
async def get_ab_test(test_id: str, cfg: Any = Depends(settings)) -> sc.ABTestOut:
    """Per arm: predictions served, feedback-labelled ones, correct ones, accuracy; the two-proportion
    z-test's verdict (a winner, or no difference yet) and the Bayesian probability that B is better."""
    try:
        test = await asyncio.to_thread(abtest.get_ab_test, test_id, cfg.db_url)
    except abtest.ABTestNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return await asyncio.to_thread(ab_out, test, cfg.db_url)

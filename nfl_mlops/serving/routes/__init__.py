"""The /mlops routes, one module per concern; `app.create_app` mounts them."""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    from nfl_mlops.serving.routes import (
        abtests,
        deployments,
        experiments,
        explain,
        labeling,
        models,
        predictions,
        reports,
        retraining,
        status,
    )

    return [
        predictions.router,
        explain.router,
        labeling.router,
        models.router,
        deployments.router,
        abtests.router,
        experiments.router,
        retraining.router,
        reports.router,
        status.router,
    ]

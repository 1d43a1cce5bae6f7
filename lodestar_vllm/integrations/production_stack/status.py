"""``GET /lodestar/status`` and ``GET /lodestar/explain/{request_id}``, mounted on the router's own app.

Metrics need no route of ours: the host's ``/metrics`` serves prometheus_client's default registry, where the
policy's metrics are registered.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException

from lodestar_vllm.integrations.production_stack.runtime import current_runtime

STATUS_PATH = "/lodestar/status"
EXPLAIN_PATH = "/lodestar/explain/{request_id}"


def build_status_router() -> APIRouter:
    router = APIRouter()

    @router.get(STATUS_PATH)
    async def lodestar_status() -> dict[str, Any]:
        runtime = current_runtime()
        if runtime is None:
            raise HTTPException(status_code=503, detail="lodestar runtime not started")
        return runtime.status()

    @router.get(EXPLAIN_PATH)
    async def lodestar_explain(request_id: str) -> dict[str, Any]:
        runtime = current_runtime()
        if runtime is None:
            raise HTTPException(status_code=503, detail="lodestar runtime not started")
        explanation = runtime.explain(request_id)
        if explanation is None:
            raise HTTPException(status_code=404, detail=f"no routing decision recorded for {request_id!r}")
        return explanation

    return router


def mount_status(app: FastAPI) -> None:
    """Idempotent: mounting twice (launcher and callbacks both active) adds the routes once."""
    if any(getattr(route, "path", None) == STATUS_PATH for route in app.routes):
        return
    app.include_router(build_status_router())

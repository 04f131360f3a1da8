"""The page (``/``, its static files are mounted by `create_app`) and the health answer."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from appliance import __version__
from appliance.ui.context import Context, context

STATIC_DIR = resources.files("appliance.ui") / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")


@router.get("/api/v1/health")
def health(ctx: Context = Depends(context)) -> dict[str, Any]:
    return {"ok": True, "version": __version__, "station_id": ctx.settings.station_id}

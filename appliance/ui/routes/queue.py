"""The queue screen's data: what is waiting to be delivered, and the alarms (offline, queue growing, disk low)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from appliance.ui.auth import WebSession
from appliance.ui.context import Context, context
from appliance.ui.guards import officer_poll
from appliance.ui.health import station_health

router = APIRouter()


@router.get("/api/v1/queue")
def queue(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> dict[str, Any]:
    with ctx.open_store() as store:
        return station_health(store, ctx.settings.data_dir, ctx.settings.health)

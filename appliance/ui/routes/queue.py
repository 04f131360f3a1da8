"""The queue screen's data: what is waiting to be delivered, and the alarms (offline, queue growing, disk low)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from appliance.ui.auth import WebSession
from appliance.ui.context import Context, context
from appliance.ui.guards import officer_poll
from appliance.ui.health import station_health
from appliance.ui.wording import delivery_error

router = APIRouter()


@router.get("/api/v1/queue")
def queue(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> dict[str, Any]:
    with ctx.open_store() as store:
        health = station_health(store, ctx.settings.data_dir, ctx.settings.health)
    for row in health.get("today", []):  # the agent's technical error in words, the text behind "Details"
        words = delivery_error(row.get("last_error"))
        row["last_error_words"] = words.text if words else None
    return health

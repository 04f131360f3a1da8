"""The booking: opened by an officer or requested by the jail management system (``/api/v1/bookings``),
then the officer's steps on the one open booking (``/api/v1/booking/...``) and its images."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from appliance.ui.auth import WebSession
from appliance.ui.context import Context, context
from appliance.ui.desk import DeskError
from appliance.ui.guards import client_of, jms_or_officer, officer_action, officer_poll

router = APIRouter()


class OpenBody(BaseModel):
    booking_number: str = Field(max_length=64)
    agency_ori: str = Field(default="", max_length=16)


class PoseBody(BaseModel):
    pose: str = Field(max_length=32)
    description: str | None = Field(default=None, max_length=400)
    auto: bool | None = None


class AcceptBody(BaseModel):
    override_reason: str | None = Field(default=None, max_length=1000)


class DiscardBody(BaseModel):
    reason: str = Field(max_length=400)


# --- opening (officer or JMS) --------------------------------------------------------------------------

@router.post("/api/v1/bookings", status_code=201)
def open_booking(body: OpenBody, request: Request, ctx: Context = Depends(context)) -> dict[str, Any]:
    who, session = jms_or_officer(ctx, request)
    agency = body.agency_ori.upper() or ctx.settings.agency_ori
    if not agency:
        raise DeskError("Enter the agency ORI (9 characters, e.g. VA0290000).", "invalid", 422)
    if who == "jms":
        req = ctx.desk.request(agency, body.booking_number, client_of(request))
        ctx.auth.audit("jms", "booking_request", {"booking_number": req.booking_number,
                                                  "agency_ori": req.agency_ori})
        return {"state": "requested", "booking_number": req.booking_number, "agency_ori": req.agency_ori}
    assert session is not None
    ctx.desk.open(session.officer_id, agency, body.booking_number)
    return ctx.desk.state()


@router.get("/api/v1/bookings")
def booking_lookup(request: Request, booking_number: str, agency_ori: str = "",
                   ctx: Context = Depends(context)) -> dict[str, Any]:
    jms_or_officer(ctx, request)
    agency = agency_ori.strip().upper() or ctx.settings.agency_ori
    return {"booking_number": booking_number, "agency_ori": agency,
            **ctx.desk.booking_state(agency, booking_number)}


# --- the open booking ----------------------------------------------------------------------------------

def holder(session: WebSession = Depends(officer_action), ctx: Context = Depends(context)) -> WebSession:
    """An officer action on the open booking: only by the officer who carries it on (see `handover`)."""
    ctx.desk.require_holder(session.officer_id)
    return session


@router.post("/api/v1/booking/handover")
def handover(session: WebSession = Depends(officer_action), ctx: Context = Depends(context)) -> dict[str, Any]:
    """The signed-in officer takes the open booking over; the photos already taken keep their officer."""
    ctx.desk.handover(session.officer_id)
    return ctx.desk.state()


@router.get("/api/v1/booking")
def booking_state(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> dict[str, Any]:
    return ctx.desk.state()


@router.post("/api/v1/booking/pose")
def select_pose(body: PoseBody, session: WebSession = Depends(holder),
                ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.select_pose(body.pose, body.description, body.auto)
    return ctx.desk.state()


@router.post("/api/v1/booking/capture")
def capture(session: WebSession = Depends(holder), ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.capture()
    return ctx.desk.state()


@router.post("/api/v1/booking/retake")
def retake(session: WebSession = Depends(holder), ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.retake()
    return ctx.desk.state()


@router.post("/api/v1/booking/accept")
def accept(body: AcceptBody, session: WebSession = Depends(holder),
           ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.accept(session.officer_id, body.override_reason)
    return ctx.desk.state()


@router.delete("/api/v1/booking/smt/{index}")
def remove_smt(index: int, session: WebSession = Depends(holder),
               ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.remove_smt(index)
    return ctx.desk.state()


@router.post("/api/v1/booking/camera")
def reconnect(session: WebSession = Depends(holder), ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.reconnect_camera()
    return ctx.desk.state()


@router.post("/api/v1/booking/save")
def save(session: WebSession = Depends(holder), ctx: Context = Depends(context)) -> dict[str, Any]:
    record_id = ctx.desk.save(session.officer_id)
    return {"record_id": record_id, **ctx.desk.state()}


@router.post("/api/v1/booking/discard")
def discard(body: DiscardBody, session: WebSession = Depends(holder),
            ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.desk.discard(session.officer_id, body.reason)
    return ctx.desk.state()


# --- images --------------------------------------------------------------------------------------------

@router.get("/api/v1/booking/frame.jpg")
def frame(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> Response:
    ctx.desk.require()
    got = ctx.desk.hub.jpeg()
    if got is None:
        return Response(status_code=204)
    jpeg, sequence = got
    return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Sequence": str(sequence)})


@router.get("/api/v1/booking/review.jpg")
def review_image(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> Response:
    return Response(ctx.desk.review_jpeg(), media_type="image/jpeg")


@router.get("/api/v1/booking/prior/{index}.jpg")
def prior_image(index: int, session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> Response:
    """A possible prior booking's photo from the booking-time check (only when the county sends them)."""
    return Response(ctx.desk.prior_photo_jpeg(index), media_type="image/jpeg")


@router.get("/api/v1/booking/accepted/{key}.jpg")
def accepted_image(key: str, session: WebSession = Depends(officer_poll),
                   ctx: Context = Depends(context)) -> Response:
    return Response(ctx.desk.accepted_jpeg(key), media_type="image/jpeg")

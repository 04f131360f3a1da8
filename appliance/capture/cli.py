"""`booking-station capture`: one booking from the terminal, for the demo and for a station without the UI.

    booking-station capture --booking 2026-000123 --camera replay:/srv/demo/frontal \\
        --left /srv/demo/left.jpg --right /srv/demo/right.jpg --auto --agency VA0290000 --station desk-1

It drives the same `BookingSession` as the officer UI, view by view (frontal, left and right side, SMT;
stored and sent as a capture's `pose`), printing guidance as it goes (only when it changes, so a 15 fps
stream does not flood the terminal) and the record id at the end:

* `--auto`: each view is auto-captured from the stream (the stable window of the station config).
* without it (non-interactive use): the first frame that passes the live gates is captured.
* A capture whose full report fails a gate is kept only with `--override-reason`; without one the view is
  retaken from the stream until `--timeout`. When the time is up (or a finite source has ended) the best
  frame seen is taken with `--override-reason`, else the command fails with the guidance it last saw.
* Sources per view: `--camera` for the frontal view (default: the station's camera), `--left` and
  `--right` for the side views (a PATH means `replay:PATH`; any camera spec works). A side view without
  a source is skipped with a warning: a booking without side views can be saved (the store requires
  only the frontal view, which carries the template), and the summary lists what is missing.
* `--capture-standard` (old name `--profile`) picks the standard the views are checked against.
* `--smt "DESCRIPTION=PATH"` (repeatable) adds a scar/mark/tattoo photo, kept as taken.

Exit status: 0 saved; 1 a check failed (no frame of the frontal view passed the capture standard, and no
`--override-reason` to keep the best one); 2 an input was refused (booking fields, a source without a usable
frame, an unknown capture standard) or the station is not usable (camera, models, data directory, full disk,
full queue). `--json` prints one JSON
object per line (events, then `{"event": "saved", "record_id": ...}`).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from appliance.cli_support import (
    EXIT_CHECK,
    EXIT_INPUT,
    EXIT_SETUP,
    capture_standard_option,
    quality_flags,
    standalone_group,
    standards_dir_option,
    station_config,
    with_flags,
)
from appliance.cli_support import fail as _fail
from appliance.config import DEFAULT_DATA_DIR, StationConfig

ENV_DATA_DIR = "BOOKING_STATION_DATA_DIR"
ENV_STATION = "BOOKING_STATION_ID"
ENV_AGENCY = "BOOKING_STATION_AGENCY"
DEFAULT_TIMEOUT = 30.0


class CaptureFailed(Exception):
    """The command cannot finish; `code` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_INPUT) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PosePlan:
    """One pose to take and where its frames come from."""

    pose: str
    spec: str | None  # None: the station's configured camera
    description: str | None = None  # SMT only


class Reporter:
    """Prints progress for people (plain lines) or machines (`--json`, one object per line), and only
    prints guidance when it changes."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._last: tuple[Any, ...] | None = None
        self._last_capture: tuple[Any, ...] | None = None

    def event(self, kind: str, text: str, **data: Any) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": kind, **data}))
        else:
            click.echo(text)

    def warn(self, text: str, **data: Any) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": "warning", "message": text, **data}))
        else:
            click.echo(f"warning: {text}", err=True)

    def guidance(self, status: Any) -> None:
        key = (status.pose, status.ready, tuple(h.code for h in status.guidance), status.camera_error)
        if key == self._last:
            return
        self._last = key
        if self.as_json:
            click.echo(json.dumps({"event": "guidance", "pose": status.pose, "ready": status.ready,
                                   "guidance": [h.to_json() for h in status.guidance],
                                   "face_box": None if status.face_box is None else
                                   [round(v, 1) for v in status.face_box]}))
        elif status.ready:
            click.echo(f"  {status.pose}: ready - hold still")
        elif status.guidance:
            click.echo(f"  {status.pose}: " + " / ".join(h.message for h in status.guidance))

    def reset(self) -> None:
        self._last = None

    def new_capture_outcome(self, review: Any) -> bool:
        """False when a capture fails exactly as the previous one of the same pose did (auto-capture
        retakes on a steady stream would otherwise print the same lines every second)."""
        key = (review.pose, review.passed, tuple(h.code for h in review.guidance))
        if review.passed or key != self._last_capture:
            self._last_capture = key
            return True
        return False


def _spec(value: str) -> str:
    """A camera spec from an option: a bare path means a replay of it."""
    from appliance.camera import BACKENDS

    name = value.partition(":")[0].strip().lower()
    return value if name in BACKENDS else f"replay:{value}"


def _smt(value: str) -> tuple[str, str]:
    description, sep, path = value.rpartition("=")
    if not sep or not description.strip() or not path.strip():
        raise click.BadParameter(f"{value!r}: give DESCRIPTION=PATH, e.g. 'tattoo, left forearm=/tmp/arm.jpg'")
    return description.strip(), path.strip()


def _default_operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (containers)
        return "cli"



@click.command("capture")
@click.option("--booking", "booking_number", required=True, metavar="NUMBER", help="booking number")
@click.option("--camera", "camera", default=None, metavar="SPEC",
              help="frontal source: a camera spec (replay:PATH, opencv:0, picamera2, ...) or a PATH to replay; "
                   "default: the station's [camera]")
@click.option("--left", "left", default=None, metavar="PATH|SPEC", help="left side view (skipped if not given)")
@click.option("--right", "right", default=None, metavar="PATH|SPEC", help="right side view (skipped if not given)")
@click.option("--smt", "smt", multiple=True, metavar="DESCRIPTION=PATH",
              help="a scar/mark/tattoo photo with its description (repeatable)")
@capture_standard_option("capture standard (nist-sap30, nist-sap40, icao; default: [quality] capture_standard)")
@standards_dir_option()
@click.option("--auto", is_flag=True, help="auto-capture each view once its gates hold for the stable window")
@click.option("--agency", default=None, envvar=ENV_AGENCY, metavar="ORI",
              help=f"agency ORI (default: the station config; env {ENV_AGENCY})")
@click.option("--operator", default=None, metavar="ID", help="operator id (default: cli:<user name>)")
@click.option("--station", "station_id", default=None, envvar=ENV_STATION, metavar="ID",
              help=f"station id (default: [station] in the config; env {ENV_STATION})")
@click.option("--data-dir", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR, envvar=ENV_DATA_DIR,
              show_default=True, help=f"station data directory (station.db, keys/); env {ENV_DATA_DIR}")
@click.option("--override-reason", default=None, metavar="TEXT",
              help="keep a capture that fails a quality gate, for this reason (audited)")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT, show_default=True,
              help="seconds to look for an acceptable photo of each view")
@click.option("--fps", type=click.FloatRange(min=0), default=None,
              help="replay sources: frames per second (0 = as fast as they are analysed)")
@click.option("--loop/--no-loop", default=True, show_default=True,
              help="replay sources: start again after the last frame (--no-loop: the source ends)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def capture_command(ctx: click.Context, booking_number: str, camera: str | None, left: str | None,
                    right: str | None, smt: tuple[str, ...], capture_standard: str | None, standards_dir: Path | None,
                    auto: bool, agency: str | None,
                    operator: str | None, station_id: str | None, data_dir: Path, override_reason: str | None,
                    timeout: float, fps: float | None, loop: bool, as_json: bool) -> None:
    """Capture one booking (views: frontal, left and right side, SMT) from a camera or replay source and store it."""
    config = with_flags(station_config(ctx), quality_flags(capture_standard, standards_dir))
    report = Reporter(as_json)
    try:
        record_id = run_capture(config, report, booking_number=booking_number, camera=camera, left=left,
                                right=right, smt=[_smt(v) for v in smt], profile=None,
                                profile_dir=None, auto=auto,
                                agency=agency, operator=operator, station_id=station_id, data_dir=data_dir,
                                override_reason=override_reason, timeout=timeout, fps=fps, loop=loop)
    except CaptureFailed as exc:
        _fail(str(exc), exc.code)
    except click.BadParameter as exc:
        _fail(exc.format_message(), EXIT_INPUT)
    if not as_json:
        click.echo(record_id)



def run_capture(config: StationConfig, report: Reporter, *, booking_number: str, camera: str | None,
                left: str | None, right: str | None, smt: list[tuple[str, str]], profile: str | None,
                profile_dir: Path | None, auto: bool,
                agency: str | None, operator: str | None, station_id: str | None, data_dir: Path,
                override_reason: str | None, timeout: float, fps: float | None, loop: bool,
                clock: Callable[[], float] = time.monotonic) -> str:
    """The command's work, raising `CaptureFailed` with the message and exit status on failure."""
    # Inputs first, before any model loads: a wrong field costs the officer no time.
    station_id, agency, operator, override_reason = _checked_inputs(
        config, booking_number=booking_number, agency=agency, operator=operator, station_id=station_id,
        data_dir=data_dir, override_reason=override_reason)
    plans = _pose_plans(report, camera=camera, left=left, right=right, smt=smt)
    station = _open_station(config, data_dir=data_dir, station_id=station_id, profile=profile,
                            profile_dir=profile_dir)
    from appliance.store import DiskFullError

    try:  # the free-space check before the booking starts, and again before each photo is processed
        session = station.start_booking(agency, booking_number, operator)
    except DiskFullError as exc:
        raise CaptureFailed(str(exc), EXIT_SETUP) from None
    try:
        for plan in plans:
            try:
                _capture_pose(station, session, plan, report, auto=auto, override_reason=override_reason,
                              timeout=timeout, fps=fps, loop=loop, clock=clock)
            except DiskFullError as exc:
                raise CaptureFailed(str(exc), EXIT_SETUP) from None
        summary = session.summary()
        if summary.missing:
            report.warn(f"saving without: {', '.join(summary.missing)}", missing=list(summary.missing))
        record_id = _save(session)
    finally:
        session.close()
    report.event("saved", f"saved booking {booking_number} as record {record_id} "
                          f"({', '.join(summary.accepted)}; queued for delivery)",
                 record_id=record_id, booking_number=booking_number, poses=list(summary.accepted),
                 missing=list(summary.missing), overrides=list(summary.overrides))
    return record_id


def _checked_inputs(config: StationConfig, *, booking_number: str, agency: str | None, operator: str | None,
                    station_id: str | None, data_dir: Path,
                    override_reason: str | None) -> tuple[str, str, str, str | None]:
    """Station id, agency, operator and override reason, defaulted from the config and checked (with the
    booking fields) before anything is loaded."""
    from appliance.capture.autocapture import OverrideRequired, validate_reason
    from appliance.store import ValidationError

    station_id = station_id or config.station.station or None
    if not station_id:
        raise CaptureFailed(f"this station has no id yet: provision it, or pass --station ID (or set {ENV_STATION})",
                            EXIT_SETUP)
    agency = agency or config.station.agency_ori or None
    if not agency:
        raise CaptureFailed(f"no agency ORI: pass --agency ORI (or set {ENV_AGENCY})")
    operator = operator or _default_operator()
    if override_reason is not None:
        try:
            override_reason = validate_reason(override_reason, config.capture.override_reason_max)
        except OverrideRequired as exc:
            raise CaptureFailed(f"--override-reason: {exc}") from None
    if not data_dir.is_dir():
        raise CaptureFailed(f"data directory {data_dir} does not exist; pass --data-dir (or set {ENV_DATA_DIR}) "
                            f"to the station's data directory", EXIT_SETUP)
    try:
        from appliance.store import Booking
        from appliance.store.clock import utc_now

        Booking(agency_ori=agency, booking_number=booking_number, operator_id=operator, captured_at=utc_now(),
                station_id=station_id)
    except ValidationError as exc:
        raise CaptureFailed(str(exc)) from None
    return station_id, agency, operator, override_reason


def _pose_plans(report: Reporter, *, camera: str | None, left: str | None, right: str | None,
                smt: list[tuple[str, str]]) -> list[PosePlan]:
    """The poses to take, in order; a profile without a source is skipped with a warning."""
    plans = [PosePlan("frontal", _spec(camera) if camera else None)]
    for pose, source in (("left_profile", left), ("right_profile", right)):
        if source:
            plans.append(PosePlan(pose, _spec(source)))
        else:
            report.warn(f"no --{pose.split('_')[0]} source: the {pose.replace('_', ' ')} view is skipped",
                        pose=pose)
    plans += [PosePlan("smt", _spec(path), description) for description, path in smt]
    return plans


def _open_station(config: StationConfig, *, data_dir: Path, station_id: str, profile: str | None,
                  profile_dir: Path | None) -> Any:
    """The capture station (models, profile, store), or `CaptureFailed` saying what is wrong."""
    from appliance.capture.session import CaptureStation
    from appliance.quality import QualityProfileError
    from appliance.vision.bundle import BundleError
    from appliance.vision.runtime import RuntimeMissing

    try:
        return CaptureStation.from_config(config, data_dir=data_dir, station_id=station_id, profile=profile,
                                          profile_dir=profile_dir)
    except (BundleError, RuntimeMissing) as exc:
        raise CaptureFailed(str(exc), EXIT_SETUP) from None
    except QualityProfileError as exc:  # unknown profile name, bad county override
        raise CaptureFailed(f"quality profile: {exc}") from None


def _capture_pose(station: Any, session: Any, plan: PosePlan, report: Reporter, *, auto: bool,
                  override_reason: str | None, timeout: float, fps: float | None, loop: bool,
                  clock: Callable[[], float]) -> None:
    """Open the pose's source and take it; a profile or SMT view that cannot be taken is skipped with a
    warning, the frontal view fails the command."""
    from appliance.camera import CameraError

    options: dict[str, Any] = {}
    spec = plan.spec
    if spec is None:
        spec = station.camera_spec
        options = dict(station.camera_options)
    if str(spec).startswith("replay:"):
        options["loop"] = loop
        if fps is not None:
            options["fps"] = fps
    try:
        description = session.open_camera(spec, **options)
    except CameraError as exc:
        if plan.pose == "frontal":
            raise CaptureFailed(str(exc), EXIT_SETUP) from None
        report.warn(f"{plan.pose}: {exc}; this view is skipped", pose=plan.pose)
        return
    report.event("pose", f"{plan.pose}: from {description}", pose=plan.pose, camera=description)
    try:
        _take(session, plan, report, auto=auto, override_reason=override_reason, timeout=timeout, clock=clock)
    except CaptureFailed as exc:
        if plan.pose == "frontal":
            raise
        report.warn(f"{exc}; the {plan.pose} view is skipped", pose=plan.pose)
    finally:
        session.close_camera()


def _save(session: Any) -> str:
    """Store the booking: its record id, or `CaptureFailed` (exit 2 when the store itself refuses)."""
    from appliance.capture.session import CaptureError
    from appliance.store import StationStoreError, ValidationError

    try:
        return session.save()
    except ValidationError as exc:
        raise CaptureFailed(str(exc)) from None
    except StationStoreError as exc:
        raise CaptureFailed(str(exc), EXIT_SETUP) from None
    except CaptureError as exc:
        raise CaptureFailed(str(exc)) from None


def _take(session: Any, plan: PosePlan, report: Reporter, *, auto: bool, override_reason: str | None,
          timeout: float, clock: Callable[[], float]) -> None:
    """Take one pose from the open camera (see the module docstring for the rules)."""
    from appliance.capture.session import Phase

    pose = plan.pose
    manual_only = pose == "smt"
    session.select_pose(pose, description=plan.description, auto=auto and not manual_only)
    report.reset()
    deadline = clock() + timeout
    last_failure: str | None = None
    while clock() < deadline:
        status = session.step()
        if status.camera_error:
            report.warn(f"{pose}: {status.camera_error}", pose=pose)
            break
        report.guidance(status)
        review = None
        if status.phase is Phase.REVIEW:
            review = session.review()
        elif status.phase is Phase.LIVE and (status.ready or manual_only) and not status.auto \
                and status.frame_sequence is not None:
            review = session.capture(source="latest")
        if review is None:
            continue
        _announce(report, review)
        if review.passed:
            session.accept()
            report.event("accepted", f"{pose}: accepted", pose=pose, override=False)
            return
        if override_reason is not None:
            session.accept(override_reason)
            report.event("accepted", f"{pose}: accepted with override ({override_reason})", pose=pose,
                         override=True)
            return
        last_failure = "; ".join(h.message for h in review.guidance) or "it fails the quality profile"
        session.retake()
    # Out of time, or the source ended: the best frame seen, if the officer's reason allows it.
    try:
        review = session.capture(source="best")
    except Exception as exc:
        raise CaptureFailed(f"{pose}: {exc}") from None
    _announce(report, review)
    if review.passed:
        session.accept()
        report.event("accepted", f"{pose}: accepted (best frame)", pose=pose, override=False)
        return
    if override_reason is None:
        why = "; ".join(h.message for h in review.guidance) or last_failure or "it fails the quality profile"
        raise CaptureFailed(f"{pose}: no frame passed the quality profile within {timeout:g} s ({why}); "
                            f"pass --override-reason TEXT to keep the best one", EXIT_CHECK)
    session.accept(override_reason)
    report.event("accepted", f"{pose}: best frame accepted with override ({override_reason})", pose=pose,
                 override=True)


def _announce(report: Reporter, review: Any) -> None:
    if not report.new_capture_outcome(review):
        return  # the same failure again on a retake: said already
    verdict = "passes" if review.passed else "fails: " + "; ".join(h.message for h in review.guidance)
    extra = f", {review.template_dim}-D template" if review.template_dim else ""
    report.event("captured", f"  {review.pose}: {review.mode} capture {review.width}x{review.height}{extra}; "
                             f"{verdict}" + "".join(f"\n  note: {n}" for n in review.notes),
                 pose=review.pose, mode=review.mode, passed=review.passed, width=review.width, height=review.height,
                 template_dim=review.template_dim, guidance=[h.to_json() for h in review.guidance],
                 notes=list(review.notes))


def register(group: click.Group) -> None:
    """Add `capture` to the `booking-station` group."""
    group.add_command(capture_command)


main = standalone_group(register, "The capture command on its own (`python -m appliance.capture.cli capture ...`).")

if __name__ == "__main__":
    main(prog_name=os.path.basename(sys.argv[0]) if sys.argv else "capture")

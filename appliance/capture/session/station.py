"""What outlives one booking (:class:`CaptureStation`): the models, the quality profile, the store and the
station's camera settings; it starts and resumes booking sessions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from appliance.camera import Camera, create_camera
from appliance.capture.autocapture import MAX_REASON_CHARS
from appliance.capture.processing import CaptureProcessor
from appliance.capture.session.booking import BookingSession
from appliance.capture.session.snapshots import AcceptedCapture, CaptureError
from appliance.capture.space import RECENT_BOOKINGS, booking_bytes_needed, camera_frame_pixels
from appliance.imageio import set_max_pixels
from appliance.store import Booking, Store
from appliance.store.db import DEFAULT_FLOOR_BYTES, data_paths
from appliance.store.space import ensure_space

DEFAULT_PROFILE = "nist-sap30"  # until the station config names one


CameraFactory = Callable[..., Camera]
StoreOpener = Callable[[], Store]


class CaptureStation:
    """What outlives one booking: the loaded models, the quality profile, where records are stored, the
    station's identity and camera settings. Build it once at start-up (loading models costs seconds),
    then `start_booking` per arrestee.

    store_opener: returns a new open `Store`; it is called in the thread that saves, and the store is
        closed again after the save (a SQLite connection belongs to the thread that opened it).
    """

    def __init__(self, processor: CaptureProcessor, *, station_id: str, store_opener: StoreOpener,
                 camera_spec: str | Mapping[str, Any] | None = None, camera_options: Mapping[str, Any] | None = None,
                 stable_seconds: float = 0.5, max_gap: float | None = 0.3, profile_hold_seconds: float = 2.0,
                 max_reason_chars: int = MAX_REASON_CHARS, camera_factory: CameraFactory = create_camera,
                 clock: Callable[[], datetime] | None = None,
                 space_check: Callable[[str], None] | None = None) -> None:
        self.processor = processor
        self.space_check = space_check
        self.station_id = station_id
        self.store_opener = store_opener
        self.camera_spec = camera_spec
        self.camera_options = dict(camera_options or {})
        self.stable_seconds = stable_seconds
        self.profile_hold_seconds = profile_hold_seconds
        self.max_gap = max_gap
        self.max_reason_chars = max_reason_chars
        self.camera_factory = camera_factory
        self.utc_now = clock or (lambda: datetime.now(timezone.utc))
        self.vision_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Any, *, data_dir: Path | str, station_id: str, profile: str | None = None,
                    profile_dir: Path | str | None = None, store_options: Mapping[str, Any] | None = None,
                    bundle: Any = None, **overrides: Any) -> CaptureStation:
        """Load the vision stack, the quality profile and the store settings from the station config.

        `bundle`: an already loaded and verified model bundle (else `config.vision.bundle` is loaded and
        verified here, which refuses a tampered bundle). `profile`/`profile_dir`: quality profile name
        and county override folder (default: the config's `[quality]` section once it has one, else
        nist-sap30 and none). `store_options` win over `[store]` (floor_bytes, max_pending).
        `overrides` go to the constructor (e.g. stable_seconds in tests).
        """
        from appliance.quality import QualityEngine, load_profile
        from appliance.vision.embedder import Embedder
        from appliance.vision.pipeline import FaceAnalyzer

        set_max_pixels(config.vision.max_pixels)  # every image this station reads from a file
        bundle = config.vision.choose_embedding(bundle) if bundle is not None else config.vision.load_bundle()
        options = config.vision.runtime_options()
        analyzer = FaceAnalyzer(bundle, options)
        embedder = Embedder(bundle, options, jitter=config.vision.template_jitter)
        profile = profile or config.quality.capture_standard or DEFAULT_PROFILE
        profile_dir = profile_dir or config.quality.standards_dir or None
        standard = load_profile(profile, profile_dir)
        engine = QualityEngine(analyzer, standard)
        processor = CaptureProcessor(analyzer, embedder, engine)
        data_dir = Path(data_dir)
        store_kwargs: dict[str, Any] = {"floor_bytes": config.store.floor_bytes,
                                        "max_pending": config.store.max_pending, **(store_options or {})}

        def open_store() -> Store:
            return Store.open_data_dir(data_dir, **store_kwargs)

        floor = int(store_kwargs.get("floor_bytes", DEFAULT_FLOOR_BYTES))
        recent: list[int] = []
        if data_paths(data_dir)[0].exists():  # a new station has no bookings to measure (and makes no store here)
            with open_store() as store:
                recent = store.recent_booking_image_bytes(RECENT_BOOKINGS)
        needed = booking_bytes_needed(standard.geometry,
                                      camera_frame_pixels(config.camera.options, config.vision.max_pixels), recent)

        def space_check(what: str) -> None:
            ensure_space(data_dir, floor, needed, what=what)

        settings: dict[str, Any] = {
            "camera_spec": config.camera.source, "camera_options": config.camera.options,
            "stable_seconds": config.capture.stable_seconds, "max_gap": config.capture.max_gap,
            "profile_hold_seconds": config.capture.profile_hold_seconds,
            "max_reason_chars": config.capture.override_reason_max,
        }
        settings.update(overrides)
        settings.setdefault("space_check", space_check)
        return cls(processor, station_id=station_id, store_opener=open_store, **settings)

    def start_booking(self, agency_ori: str, booking_number: str, operator_id: str) -> BookingSession:
        """A new session. Every booking field is checked now, by the store's own rules, so a booking
        number with a control character (a barcode scanner's trailing CR, a pasted TAB) is refused
        before any photo is taken: `ValidationError` names the field, the character and its position."""
        booking = Booking(agency_ori=agency_ori, booking_number=booking_number, operator_id=operator_id,
                          captured_at=self.utc_now(), station_id=self.station_id)
        self.check_space("Booking NOT started")
        return BookingSession(self, booking)

    def check_space(self, what: str) -> None:
        """`DiskFullError` (message starting with ``what``) when a booking would not fit above the store's
        free-space floor: checked before a booking starts and before each photo is processed, so a full disk
        refuses before the officer's work instead of failing the save after it."""
        if self.space_check is not None:
            self.space_check(what)

    def resume_booking(self, booking: Booking, accepted: Iterable[AcceptedCapture]) -> BookingSession:
        """A session that carries on a booking in progress (e.g. the UI's draft after a restart): the
        same booking fields and the captures the officer had already accepted, in their order."""
        if not isinstance(booking, Booking):
            raise CaptureError(f"resume_booking needs a Booking, got {type(booking).__name__}")
        if booking.station_id != self.station_id:
            raise CaptureError(f"booking {booking.booking_number} was opened on station {booking.station_id}, "
                               f"not on this station ({self.station_id})")
        session = BookingSession(self, booking)
        session._restore(accepted)
        return session

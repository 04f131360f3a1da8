"""Capture to committed record, and the memory of a capture process (`make bench`; README lists the figures).

* "accepted frame -> committed record": from the frame auto-capture (or the officer) chose to the store's
  COMMIT returning: full quality report, standard crop (JPEG), template, encryption (AES-256-GCM) and the
  one SQLite transaction (synchronous=FULL, so the fsync is included), through `BookingSession` exactly
  as the UI and the CLI run it (`capture()` + `accept()` + `save()`, store opened and closed per save).
  Also per stage, to show where the time goes, and for a full booking (frontal + both profiles).
* Memory: VmRSS and VmHWM (peak) of a fresh capture process that loaded the models and stored one booking,
  measured in a child process so the other benchmarks' allocations do not count.

The frame is a real portrait from the shared data (`$BOOKING_SHARED_DATA` or ../shared/data), the one the
tests use for a passing frontal view.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tests.bench import Result, median_ms

PORTRAIT = Path("faces") / "deepface" / "img36.jpg"  # 1500x1000, one face, passes the live gates
PROFILE = Path("faces") / "deepface" / "img13.jpg"


def _shared(relative: Path) -> Path:
    from tests.conftest import shared_data_dir

    path = shared_data_dir() / relative
    if not path.is_file():
        raise SystemExit(f"benchmark image {path} not found: set $BOOKING_SHARED_DATA to the shared data folder")
    return path


def _station(data_dir: Path, threads: int):
    from appliance.capture.session import CaptureStation
    from appliance.config import StationConfig

    config = StationConfig()
    config.vision.threads = threads
    return CaptureStation.from_config(config, data_dir=data_dir, station_id="bench-desk",
                                      store_options={"floor_bytes": 0})


def _booking(station, number: int, *, profiles: bool) -> str:
    """One booking through the session API; returns its record id."""
    session = station.start_booking("VA0290000", f"BENCH-{number:06d}", "bench")
    try:
        poses = [("frontal", PORTRAIT)] + ([("left_profile", PROFILE), ("right_profile", PROFILE)] if profiles else [])
        for pose, image in poses:
            session.open_camera(f"replay:{_shared(image)}", fps=0)
            session.select_pose(pose, auto=False)
            session.step()
            review = session.capture()
            session.accept(None if review.passed else "benchmark photo")
        return session.save()
    finally:
        session.close()


def _timed_booking(station, number: int, *, profiles: bool) -> float:
    """Milliseconds from the chosen frame to the committed record (camera and preview excluded)."""
    session = station.start_booking("VA0290000", f"BENCH-{number:06d}", "bench")
    try:
        total = 0.0
        poses = [("frontal", PORTRAIT)] + ([("left_profile", PROFILE), ("right_profile", PROFILE)] if profiles else [])
        for pose, image in poses:
            session.open_camera(f"replay:{_shared(image)}", fps=0)
            session.select_pose(pose, auto=False)
            session.step()  # the preview frame the officer sees; capture() takes it
            t0 = time.perf_counter()
            review = session.capture()
            session.accept(None if review.passed else "benchmark photo")
            total += time.perf_counter() - t0
        t0 = time.perf_counter()
        session.save()
        total += time.perf_counter() - t0
        return total * 1000.0
    finally:
        session.close()


def run(threads: int, repeats: int) -> list[Result]:
    from appliance.imageio import read_image
    from appliance.store import Store

    repeats = max(20, repeats)
    rows: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        data_dir = Path(tmp)
        station = _station(data_dir, threads)
        processor = station.processor
        image = read_image(_shared(PORTRAIT))
        size = f"{image.shape[1]}x{image.shape[0]}"
        for i in range(3):  # warm-up: first calls allocate
            _booking(station, 900000 + i, profiles=False)

        samples = [_timed_booking(station, i, profiles=False) for i in range(repeats)]
        rows.append(Result("store", "accepted frame -> committed record", threads,
                           statistics.median(samples), runs=repeats,
                           note=f"frontal {size}; p90 {statistics.quantiles(samples, n=10)[-1]:.1f} ms"))
        samples = [_timed_booking(station, 1000 + i, profiles=True) for i in range(repeats)]
        rows.append(Result("store", "same, full booking (frontal + 2 profiles)", threads,
                           statistics.median(samples), runs=repeats, note="profiles: crop + report + JPEG"))

        def stage(name: str, fn, note: str = "") -> Result:
            return Result("store", name, threads, median_ms(fn, repeats), runs=repeats, note=note)

        engine = processor.engine
        report = engine.full(image)
        face = report.face
        from appliance.quality.standardize import standardize

        rows.append(stage("  full quality report (all measures)", lambda: engine.full(image)))
        rows.append(stage("  standard crop + JPEG (nist-sap30)",
                          lambda: standardize(image, face, processor.profile.geometry)))
        rows.append(stage("  template (align + embed)", lambda: processor.template(image, face)))
        processed = processor.process("frontal", image, mode="manual", captured_at=datetime.now(timezone.utc))

        from appliance.store import Booking, Capture

        capture = Capture.from_jpeg("frontal", processed.jpeg, processed.width, processed.height, "bench",
                                    quality=processed.quality, template=list(processed.template or ()),
                                    template_model=processed.template_model)
        counter = iter(range(10**9))
        with Store.open_data_dir(data_dir, floor_bytes=0) as store:
            def save() -> None:
                booking = Booking(agency_ori="VA0290000", booking_number=f"SAVE-{next(counter):06d}",
                                  operator_id="bench", captured_at=datetime.now(timezone.utc),
                                  station_id="bench-desk")
                store.save_booking(booking, [capture])

            rows.append(stage("  encrypt + one SQLite transaction (commit)", save,
                              note=f"{len(processed.jpeg) // 1024} KiB JPEG, synchronous=FULL"))
        rows.append(stage("  open + close the store (per save)",
                          lambda: Store.open_data_dir(data_dir, floor_bytes=0).close()))
    rows.extend(_memory(threads))
    return rows


def _memory(threads: int) -> list[Result]:
    """VmRSS and VmHWM of a fresh process after one booking (see `_child`)."""
    proc = subprocess.run([sys.executable, "-m", "tests.bench.store", "--child", str(threads)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed: {proc.stderr.strip()[-500:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    note = f"models loaded: {figures['models_rss_mib']:.0f} MiB; before imports: {figures['start_rss_mib']:.0f} MiB"
    return [
        Result("store", "capture process RSS after a booking (VmRSS)", threads, figures["rss_mib"], unit="MiB",
               runs=1, note=note),
        Result("store", "capture process peak RSS (VmHWM)", threads, figures["hwm_mib"], unit="MiB", runs=1,
               note="one booking: frontal 1500x1000 + 2 profiles 2048x1364"),
    ]


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child(threads: int) -> None:
    """A capture process: load the station (models, profile), store one full booking, report memory."""
    start = _status_mib("VmRSS")
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        station = _station(Path(tmp), threads)
        models = _status_mib("VmRSS")
        _booking(station, 1, profiles=True)
        print(json.dumps({"start_rss_mib": start, "models_rss_mib": models, "rss_mib": _status_mib("VmRSS"),
                          "hwm_mib": _status_mib("VmHWM")}))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m tests.bench.store --child THREADS "
                         "(the benchmarks themselves run with python -m tests.bench)")

"""Peak memory of `analyze` and `capture` on the largest picture the station accepts (`make bench`).

Each figure is the peak resident set (ru_maxrss, reported by a bare launcher interpreter) of a fresh
`booking-station` process, beside its rivals in the same run: the same command on the 480x600 mug shot
it was made from, and on a 20000x20000 JPEG (its header lies about the size of a small file), which the
header check refuses before decoding. The ceiling is 600 MB: a Raspberry Pi 4 with 2 GB also runs the
UI, the store and the sync agent.

The largest accepted picture is the MEDS-II mug shot S001 enlarged to 5656x7070 (39.99 MP, under the
default 40 MP `[vision] max_pixels`), encoded as a JPEG at quality 90.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

from tests.bench import Result

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path("faces") / "openmpf_meds" / "meds-aa-S001-01.jpg"
LARGEST = (5656, 7070)  # 39,987,920 pixels
CEILING_MIB = 600 * 1e6 / 2**20


# A bare interpreter runs the command and reports its peak: a child's ru_maxrss counts what it had at
# fork time too, so forking from this (large) benchmark process would inflate every figure.
_LAUNCHER = """
import json, os, resource, subprocess, sys
status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, status]))
"""


def _peak_mib(cmd: list[str]) -> tuple[float, int]:
    """(peak RSS in MiB, exit status) of one fresh child process."""
    out = subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, *cmd], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    kib, status = json.loads(out)
    return kib / 1024.0, status  # Linux reports kB


def _images(folder: Path) -> dict[str, Path]:
    from tests.conftest import shared_data_dir
    from tests.vision.test_pixel_limit import lying_jpeg

    source = shared_data_dir() / SOURCE
    if not source.is_file():
        raise SystemExit(f"benchmark image {source} not found: set $BOOKING_SHARED_DATA to the shared data folder")
    big = cv2.resize(cv2.imread(str(source)), LARGEST, interpolation=cv2.INTER_CUBIC)
    paths = {"480x600": folder / "small.jpg", "5656x7070": folder / "largest.jpg", "20000x20000": folder / "huge.jpg"}
    paths["480x600"].write_bytes(source.read_bytes())
    cv2.imwrite(str(paths["5656x7070"]), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    paths["20000x20000"].write_bytes(lying_jpeg(source.read_bytes(), 20000, 20000))
    return paths


def run(threads: int, repeats: int) -> list[Result]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-inputs-") as tmp:
        folder = Path(tmp)
        config = folder / "station.toml"
        config.write_text(f"[vision]\nthreads = {threads}\n")
        for size, path in _images(folder).items():
            analyze = [sys.executable, "-m", "appliance.cli", "--config", str(config), "analyze", "--profile",
                       "nist-sap30", str(path)]
            peak, status = _peak_mib(analyze)
            rows.append(Result("inputs", f"analyze --profile, {size}: peak RSS", threads, peak, unit="MiB", runs=1,
                               note=f"exit {status}; ceiling {CEILING_MIB:.0f} MiB"))
            data = folder / f"data-{size}"
            data.mkdir()
            capture = [sys.executable, "-m", "appliance.capture.cli", "--config", str(config), "capture",
                       "--booking", f"BENCH-{size}", "--agency", "VA0290000", "--station", "bench-desk",
                       "--operator", "bench", "--camera", f"replay:{path}", "--no-loop", "--fps", "0",
                       "--timeout", "60", "--override-reason", "benchmark", "--data-dir", str(data), "--json"]
            peak, status = _peak_mib(capture)
            rows.append(Result("inputs", f"capture (frontal), {size}: peak RSS", threads, peak, unit="MiB", runs=1,
                               note=f"exit {status}; ceiling {CEILING_MIB:.0f} MiB"))
    return rows

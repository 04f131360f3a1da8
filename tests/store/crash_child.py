"""Child process for the crash tests: saves bookings in a loop until it is killed.

Run as ``python -m tests.store.crash_child DATA_DIR BLOB_BYTES``. It prints ``ready`` once the store is
open, then for every booking ``saved RECORD_ID SHA,SHA,SHA`` only after `Store.save_booking` returned
(so each printed id is a promise: this record is committed). Every other save it also reports a failed
delivery attempt for the previous record (``failed RECORD_ID``), so kills also land in outbox updates.
It never marks anything delivered: after any kill, every record must still be pending.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

from appliance.store import Booking, Capture, Store


def main() -> None:
    data_dir, blob_bytes = sys.argv[1], int(sys.argv[2])
    store = Store.open_data_dir(data_dir, floor_bytes=0)
    print("ready", flush=True)
    previous = None
    n = 0
    while True:
        n += 1
        captures = [Capture.from_jpeg(pose, b"\xff\xd8\xff\xe0" + os.urandom(blob_bytes - 4), 480, 600, "ofc-17",
                                      quality={"n": n})
                    for pose in ("frontal", "left_profile", "right_profile")]
        booking = Booking("VA0290000", f"CRASH-{os.getpid()}-{n}", "ofc-17", datetime.now(timezone.utc),
                          "fairfax-desk-1")
        record_id = store.save_booking(booking, captures)
        print(f"saved {record_id} {','.join(c.sha256 for c in captures)}", flush=True)
        if previous is not None and n % 2 == 0:
            store.mark_failed(previous, "no ack from the gallery")
            print(f"failed {previous}", flush=True)
        previous = record_id


if __name__ == "__main__":
    main()

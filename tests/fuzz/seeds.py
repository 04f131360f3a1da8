"""Writes the seed corpus in ``tests/fuzz/corpus/`` (``python -m tests.fuzz.seeds``): a few valid inputs per
target, so fuzzing starts from the real formats, and the odd inputs fuzzing found worth keeping.

Kept small on purpose (a few kB per file): the corpus is replayed by ``make test``.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import cbor2

from sync.protocol import audit_wire, wire
from tests.fuzz.targets import COMMAND_KID, CORPUS, COUNTY, KEY, NOW, STATION
from tests.sync import factory


def _record_content(record: wire.WireRecord) -> bytes:
    return cbor2.dumps(wire.record_as_map(record), canonical=True, datetime_as_timestamp=True)


def _audit_batch() -> audit_wire.AuditBatch:
    entries, prev = [], audit_wire.GENESIS_HASH
    for seq, (actor, action, details) in enumerate(
            [("ofc-1", "logon", "{}"), ("ofc-1", "capture", '{"record_id":"x"}'), ("system", "purge", "{}")], 1):
        digest = audit_wire.entry_hash(seq, "2026-03-01T15:00:00.000000Z", actor, action, details, prev)
        entries.append(audit_wire.AuditWireEntry(seq, "2026-03-01T15:00:00.000000Z", actor, action, details, prev,
                                                 digest))
        prev = digest
    return audit_wire.AuditBatch(COUNTY, STATION, tuple(entries), len(entries), prev)


def _command(action: str, args: dict) -> wire.WireCommand:
    return wire.WireCommand(command_id=wire.uuid7(), county=COUNTY, station=STATION, action=action,
                            issued_at=NOW - timedelta(minutes=1), expires_at=NOW + timedelta(days=1), args=args)


def _command_content(command: wire.WireCommand) -> bytes:
    payload = wire.encode_command(command, KEY, kid=COMMAND_KID)
    return cbor2.loads(payload).value[2]


def seeds() -> dict[str, list[bytes]]:
    small = factory.record(station=STATION, county=COUNTY,
                           captures=(factory.capture("frontal", template=factory.template(dim=8)),))
    batch = _audit_batch()
    purge = _command("purge", {"record_id": wire.uuid7(), "reason": "court order"})
    config = _command("config", {"settings": {"status_interval": 120}})
    rotate = _command("rotate", {"target": "signing-key"})
    from sync.county.gallery import nist

    nist_file = nist.encode_records(nist.build_records(small))
    return {
        "wire": [
            b"\x00" + wire.encode_record(small, KEY),
            b"\x01" + _record_content(small),
            b"\x02" + wire.encode_ack(wire.Ack(small.record_id, "stored")),
            b"\x02" + wire.encode_ack(wire.Ack(None, "rejected", "bad_signature", "no")),
            b"\x03" + audit_wire.encode_batch(batch, KEY),
            b"\x03\x01" + cbor2.loads(audit_wire.encode_batch(batch, KEY)).value[2],
        ],
        "command": [
            b"\x00" + wire.encode_command(purge, KEY, kid=COMMAND_KID),
            b"\x01" + _command_content(purge),
            b"\x01" + _command_content(config),
            b"\x01" + _command_content(rotate),
        ],
        "nist": [nist_file],
        "config": [
            b"\x00[station]\ncounty = \"king\"\nstation = \"desk-1\"\n[vision]\nthreads = 2\n[ui]\nport = 8080\n",
            b"\x01[station]\ncounty = \"king\"\nstation = \"desk-1\"\n[mqtt]\nhost = \"mqtt.example\"\nport = 8883\n"
            b"[sync]\nmax_in_flight = 8\nack_timeout = 30.0\n",
            b"\x02[gallery]\ndb = \"gallery.db\"\n[ca]\ndir = \"ca\"\n[broker]\nhost = \"localhost\"\nport = 8883\n",
        ],
    }


def main() -> None:
    for target, items in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in items:
            (folder / f"seed-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)
        print(f"{target}: {len(items)} seeds in {folder.relative_to(Path.cwd())}")


if __name__ == "__main__":
    main()

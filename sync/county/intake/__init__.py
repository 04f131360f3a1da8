"""What enters and leaves the gallery outside a station's delivery: legacy mug shots (``import``) and
sealed or expunged bookings (``purge``)."""

IMPORT_STATION = "county-import"
"""The reserved station id of records the county imported itself (see :mod:`sync.county.intake.identity`);
no station may enrol under it."""

"""Sync: the booking protocol and its two sides.

* :mod:`sync.protocol`: what the station and the county share (wire format, topics, the enrolment
  contract, TLS and file helpers); imports neither side.
* :mod:`sync.station`: the device's sync agent (runs on the booking station).
* :mod:`sync.county`: everything that runs at the county (gallery, enrolment, broker configuration,
  the ``booking-gallery`` command).
* :mod:`sync.cli_conventions`: what both command lines share (``--json``, renamed flags, exit codes).

The boundaries are contracts in ``pyproject.toml`` (``[tool.importlinter]``), checked by ``make lint``
and ``tests/test_boundaries.py``. Nothing under ``sync`` may import the appliance's camera, vision or UI
code: the county side runs on a server without them.
"""

__version__ = "0.1.0"

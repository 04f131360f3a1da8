"""What the station and the county share: the wire codec (CBOR + COSE_Sign1), MQTT topics, the MQTT
client factory (:mod:`sync.protocol.mqtt`), the enrolment contract, client TLS, atomic file writes, JPEG
headers and systemd notification.

Imports neither :mod:`sync.station`, :mod:`sync.county`, :mod:`appliance` nor :mod:`firmware`
(an import-linter contract in ``pyproject.toml``), so either side can take it alone.
"""

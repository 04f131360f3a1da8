"""Everything that runs at the county: the gallery (storage, receiver, device registry, fleet health,
ANSI/NIST-ITL exports), the county CA and enrolment server, the Mosquitto configuration and the
``booking-gallery`` command.

Runs on a county server without camera or vision code: imports :mod:`sync.protocol`, never
:mod:`sync.station` or the appliance's camera, capture, store or UI.
"""

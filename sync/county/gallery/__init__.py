"""The gallery: storage, the device registry, the MQTT receiver, fleet health and exports.

Runs on a county server without camera or vision code; imports :mod:`sync.protocol` and the rest of
:mod:`sync.county`.
"""

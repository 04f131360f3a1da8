"""The county side: gallery storage, the device registry and the MQTT receiver.

Runs on a county server without camera or vision code; imports only :mod:`sync`.
"""

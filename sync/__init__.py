"""Sync: the wire format, the device's sync agent and the county gallery receiver.

Must not import the appliance's camera, vision or UI code: the gallery runs on a server without them.
"""

__version__ = "0.1.0"

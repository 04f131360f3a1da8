"""The booking station's side of sync: the agent that delivers the outbox to the county gallery over
MQTT with mutual TLS, its ``[sync]`` configuration, county commands and the ``sync``/``status`` commands.

Runs on the device. Imports :mod:`sync.protocol` (and the appliance's store), never :mod:`sync.county`.
"""

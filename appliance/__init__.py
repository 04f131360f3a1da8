"""Booking-station appliance: the device side (camera, vision, quality, capture, store, ui, scheduler)."""

__version__ = "0.1.0"

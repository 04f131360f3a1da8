"""Firmware side of the product: model bundles, device profiles, provisioning."""

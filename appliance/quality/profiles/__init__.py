"""Shipped quality profiles (TOML). A package only so that installers ship the .toml files beside it."""

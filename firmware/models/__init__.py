"""Model bundle builder: takes models from installed packages, converts dlib's network, writes a manifest."""

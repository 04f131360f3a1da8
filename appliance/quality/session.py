"""The per-image session: everything measures share, computed once and only when first asked for.

OFIQ's Session pattern: detection, landmarks, pose and the region masks are expensive relative to most
measures and needed by many of them, so the session owns them and measures only read. Everything is a
lazily cached property, which is what keeps the live path cheap: a preview frame asks only for geometry
measures, so the aligned face chip, colour conversions and masks are never built for it.

Two resampled views of the face are made on demand, both similarity-warped so the eyes are level and at
fixed positions (so measures see the same scale on a 640x480 preview and on a 24-megapixel still):

- `chip`: the face at 96 px inter-eye distance (about the SAP 30 output scale) in a 384x384 square, for
  the photometric, state and occlusion measures. Masks come from the mesh: the face oval, eye rings,
  brows, lips, a skin mask (oval minus eyes, brows, lips and nostrils) and cheek patches.
- `portrait`: the whole head and surroundings at 40 px inter-eye distance in a 4:5 canvas, for
  background uniformity and head coverings; its background mask is everything outside an enlarged head
  ellipse and above the chin line (below it are neck, shoulders and clothes, not background).

Big sources are first reduced with area averaging (`cv2.resize(INTER_AREA)`) so the warp never point-
samples a 5x reduction: aliasing would invent sharpness and hide JPEG blocks. The warp, the mesh
polygons and the ellipses are `appliance.vision.resample`'s: `cv2.warpAffine`'s and `cv2.fillPoly`'s
pixels change between the OpenCV versions we allow, and `cv2.ellipse` takes whole-pixel centres and
axes, so a mask jumped a pixel when a landmark crossed .5 (background uniformity moved by its whole
tolerance for 0.01 px of landmark noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import cv2
import numpy as np

from appliance.quality import colour, mapping
from appliance.quality.pose import Pose, estimate_pose, load_template
from appliance.quality.registry import MeasureConfig, all_measures, load_measure_config
from appliance.quality.types import CannotAssess, MeasureResult
from appliance.vision import landmarks as lm
from appliance.vision.resample import ellipse_mask, polygon_mask, warp_affine, warp_valid
from appliance.vision.types import Face

if TYPE_CHECKING:
    from appliance.vision.pipeline import FaceAnalyzer

T = TypeVar("T")

MIN_MESH_PRESENCE = 0.5  # FaceMesh's own "is this a face" probability; below it the landmarks are noise

# Lower/upper inner-lip pairs that face each other, outer corner to outer corner.
INNER_LIP_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318),
                   (415, 324))

CHIP_SIZE = 384
CHIP_IED = 96.0  # even, like PORTRAIT_IED, so the eyes sit on pixel centres (`_view`)
CHIP_EYE_Y = 160.0
PORTRAIT_SIZE = (256, 320)  # width, height: 4:5
PORTRAIT_IED = 40.0
PORTRAIT_EYE_Y = 136.0


def _similarity_to(eyes: np.ndarray, ied: float, centre: tuple[float, float]) -> np.ndarray:
    """2x3 similarity taking the two eye centres (subject's right first) to level eyes `ied` apart."""
    (rx, ry), (lx, ly) = eyes
    dx, dy = lx - rx, ly - ry
    dist = math.hypot(dx, dy)
    if dist < 1e-6:
        raise CannotAssess("eye centres coincide")
    k = ied / dist
    c, s = dx / dist, dy / dist
    rot = np.array([[c, s], [-s, c]]) * k
    mid = np.array([(rx + lx) / 2, (ry + ly) / 2])
    offset = np.asarray(centre) - rot @ mid
    return np.hstack([rot, offset[:, None]])


def warp_face(image: np.ndarray, affine: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Apply a similarity `affine` (image -> output) into `size` (w, h); returns (pixels, valid mask).

    When the affine shrinks by more than 1.5x, the footprint is first area-averaged down, so the warp
    itself only resamples mildly. Pixels from outside the source are marked invalid (mask 0).
    """
    w, h = size
    scale = math.sqrt(abs(np.linalg.det(affine[:, :2])))
    src = image
    aff = affine.astype(np.float64)
    if scale < 1 / 1.5:
        inv = cv2.invertAffineTransform(aff)
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
        foot = corners @ inv[:, :2].T + inv[:, 2]
        x0 = int(max(0, math.floor(foot[:, 0].min()) - 2))
        y0 = int(max(0, math.floor(foot[:, 1].min()) - 2))
        x1 = int(min(image.shape[1], math.ceil(foot[:, 0].max()) + 2))
        y1 = int(min(image.shape[0], math.ceil(foot[:, 1].max()) + 2))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            f = min(1.0, scale * 1.25)
            crop = image[y0:y1, x0:x1]
            nw, nh = max(2, round((x1 - x0) * f)), max(2, round((y1 - y0) * f))
            src = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / (x1 - x0), nh / (y1 - y0)
            # reduced pixel (u, v) <- original (x, y): u = (x - x0 + 0.5) * fx - 0.5
            to_reduced = np.array([[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5], [0, 0, 1]])
            aff = (np.vstack([aff, [0, 0, 1]]) @ np.linalg.inv(to_reduced))[:2]
    return warp_affine(src, aff, (w, h), border="replicate"), warp_valid(src.shape, aff, (w, h))


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ affine[:, :2].T + affine[:, 2]


@dataclass
class FaceView:
    """One resampled view of the face (chip or portrait) with the mesh mapped into it."""

    rgb: np.ndarray
    valid: np.ndarray  # uint8 0/255: pixel came from inside the source image
    affine: np.ndarray  # image -> view
    mesh: np.ndarray  # (468, 2) in view pixels
    eyes: np.ndarray  # (2, 2) in view pixels
    ied: float  # view pixels

    @cached_property
    def lum(self) -> np.ndarray:
        return colour.luminance(self.rgb)

    @cached_property
    def lab(self) -> np.ndarray:
        return colour.lab(self.rgb)

    @cached_property
    def grey(self) -> np.ndarray:
        return cv2.cvtColor(self.rgb, cv2.COLOR_RGB2GRAY)

    def poly(self, indices: Sequence[int]) -> np.ndarray:
        return polygon_mask(self.rgb.shape[:2], self.mesh[list(indices)])

    @cached_property
    def face_mask(self) -> np.ndarray:
        """The face oval (forehead to chin, cheek to cheek) within the source image."""
        return cv2.bitwise_and(self.poly(lm.FACE_OVAL), self.valid)

    @cached_property
    def eye_masks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.poly(lm.RIGHT_EYE_RING), self.poly(lm.LEFT_EYE_RING)

    @cached_property
    def brow_mask(self) -> np.ndarray:
        right = lm.RIGHT_EYEBROW_UPPER + tuple(reversed(lm.RIGHT_EYEBROW_LOWER))
        left = lm.LEFT_EYEBROW_UPPER + tuple(reversed(lm.LEFT_EYEBROW_LOWER))
        return cv2.bitwise_or(self.poly(right), self.poly(left))

    @cached_property
    def lips_mask(self) -> np.ndarray:
        """Outer lip contour, mouth opening included."""
        return self.poly(lm.LIPS_OUTER)

    @cached_property
    def mouth_opening_mask(self) -> np.ndarray:
        return self.poly(lm.LIPS_INNER)

    @cached_property
    def nostril_mask(self) -> np.ndarray:
        ra, la, base = self.mesh[lm.NOSE_RIGHT_ALA], self.mesh[lm.NOSE_LEFT_ALA], self.mesh[lm.NOSE_BASE]
        centre = (ra + la) / 2 * 0.5 + base * 0.5
        half_w = max(2.0, float(np.linalg.norm(la - ra)) * 0.6)
        angle = math.degrees(math.atan2(la[1] - ra[1], la[0] - ra[0]))
        return ellipse_mask(self.rgb.shape[:2], centre, (half_w, 0.14 * self.ied), angle)

    def _dilate(self, mask: np.ndarray, frac: float) -> np.ndarray:
        r = max(1, round(frac * self.ied))
        return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))

    @cached_property
    def features_mask(self) -> np.ndarray:
        """Eyes, brows, lips and nostrils, slightly enlarged: the non-skin parts of a face."""
        eyes = cv2.bitwise_or(*self.eye_masks)
        out = cv2.bitwise_or(self._dilate(eyes, 0.06), self._dilate(self.brow_mask, 0.05))
        out = cv2.bitwise_or(out, self._dilate(self.lips_mask, 0.04))
        return cv2.bitwise_or(out, self.nostril_mask)

    @cached_property
    def skin_mask(self) -> np.ndarray:
        """Face oval minus eyes, brows, lips and nostrils: where only skin (or an occluder) should be."""
        return cv2.bitwise_and(self.face_mask, cv2.bitwise_not(self.features_mask))

    @cached_property
    def midline_x(self) -> float:
        """x of the face's vertical midline (nose bridge to nose base)."""
        return float(np.mean(self.mesh[[lm.NOSE_BRIDGE, lm.NOSE_TIP, lm.NOSE_BASE], 0]))

    @cached_property
    def cheek_boxes(self) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        """Cheek squares below each eye (ISO/IEC 29794-5 colour/illumination zones), as x0, y0, x1, y1.

        Side 0.3 IED, under the eye's inner half, halfway down from the eye line to the mouth centre.
        """
        mouth = (self.mesh[lm.UPPER_LIP_INNER] + self.mesh[lm.LOWER_LIP_INNER]) / 2
        mid = self.eyes.mean(axis=0)
        drop = float(np.linalg.norm(mouth - mid)) / 2
        side = max(2, round(0.3 * self.ied))
        (rx, ry), (lx, ly) = self.eyes
        right = (round(rx - side), round(ry + drop), round(rx), round(ry + drop + side))
        left = (round(lx), round(ly + drop), round(lx + side), round(ly + drop + side))
        return right, left


@dataclass
class BackgroundView:
    view: FaceView
    mask: np.ndarray  # uint8 0/255


class QualitySession:
    """One image under assessment. Construct with an analyzer (faces found lazily) or given faces.

    `result(name)` computes a measure once and caches it; measures call other measures the same way
    (the unified quality score reads the component scores).
    """

    def __init__(
        self,
        image: np.ndarray,
        analyzer: FaceAnalyzer | None = None,
        faces: list[Face] | None = None,
        config: MeasureConfig | None = None,
    ) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("QualitySession needs a uint8 HxWx3 RGB image")
        if faces is None and analyzer is None:
            raise ValueError("QualitySession needs an analyzer or precomputed faces")
        self.image = image
        self.height, self.width = image.shape[:2]
        self._analyzer = analyzer
        self._faces = faces
        self.config = config or load_measure_config()
        self._results: dict[str, MeasureResult] = {}
        self._memo: dict[str, Any] = {}

    # -- detection and landmarks ------------------------------------------------------------------
    @property
    def faces(self) -> list[Face]:
        if self._faces is None:
            assert self._analyzer is not None
            self._faces = self._analyzer.analyze(self.image, landmarks=True, iris=True)
        return self._faces

    @cached_property
    def face(self) -> Face:
        """The subject: the largest face, with a trustworthy mesh; else CannotAssess."""
        if not self.faces:
            raise CannotAssess("no face found")
        face = self.faces[0]
        if face.mesh is None:
            raise CannotAssess("no face landmarks (the analyzer ran without landmarks)")
        if face.mesh_presence is not None and face.mesh_presence < MIN_MESH_PRESENCE:
            raise CannotAssess(f"face landmarks unreliable (mesh presence {face.mesh_presence:.2f})")
        return face

    @cached_property
    def mesh(self) -> np.ndarray:
        return np.asarray(self.face.mesh, dtype=float)

    @cached_property
    def eyes(self) -> np.ndarray:
        """(2, 2) eye centres, subject's right first: iris centres when the iris model ran."""
        return np.asarray(self.face.eyes, dtype=float)

    @cached_property
    def eye_mid(self) -> np.ndarray:
        return self.eyes.mean(axis=0)

    @cached_property
    def ied_image(self) -> float:
        """Distance between the eye centres as seen in the image (foreshortened by yaw)."""
        return float(np.linalg.norm(self.eyes[1] - self.eyes[0]))

    @cached_property
    def t_metric(self) -> float:
        """T of ISO/IEC 29794-5: distance from the eye midpoint to the chin, image pixels."""
        t = float(np.linalg.norm(self.mesh[lm.CHIN, :2] - self.eye_mid))
        if t < 1.0:
            raise CannotAssess("eye-to-chin distance is zero")
        return t

    @cached_property
    def pose(self) -> Pose:
        return estimate_pose(self.mesh)

    @cached_property
    def frontal_mesh(self) -> np.ndarray:
        """The mesh with the head pose undone: (468, 3) in the template's frame, inter-eye distance 1.

        Expression and other shape measures compare shapes here, so a turned or tilted head does not
        read as a changed face.
        """
        template = load_template()
        pose = self.pose
        idx = template.rigid
        centre, centre_t = self.mesh[idx].mean(axis=0), template.points[idx].mean(axis=0)
        return ((self.mesh - centre) @ pose.rotation) / pose.scale + centre_t

    # -- resampled views ----------------------------------------------------------------------------
    def _view(self, ied: float, size: tuple[int, int], eye_y: float) -> FaceView:
        # The eyes land on pixel centres (even IED, integer eye line), half a pixel right of the exact
        # middle: boxes and discs placed at round(eye) then cannot flip with the landmarks' last bits, as
        # they did when the eyes sat on half pixels (a cheek box moved a pixel between OpenCV versions).
        affine = _similarity_to(self.eyes, ied, (size[0] / 2, eye_y))
        rgb, valid = warp_face(self.image, affine, size)
        return FaceView(rgb=rgb, valid=valid, affine=affine, mesh=_apply(affine, self.mesh[:, :2]),
                        eyes=_apply(affine, self.eyes), ied=ied)

    @cached_property
    def chip(self) -> FaceView:
        return self._view(CHIP_IED, (CHIP_SIZE, CHIP_SIZE), CHIP_EYE_Y)

    @cached_property
    def portrait(self) -> FaceView:
        return self._view(PORTRAIT_IED, PORTRAIT_SIZE, PORTRAIT_EYE_Y)

    @cached_property
    def background(self) -> BackgroundView:
        """Portrait pixels that are background: outside an enlarged head ellipse, above the chin."""
        v = self.portrait
        h, w = v.rgb.shape[:2]
        mask = v.valid.copy()
        oval = v.mesh[list(lm.FACE_OVAL)]
        x0, x1 = oval[:, 0].min(), oval[:, 0].max()
        top, chin = v.mesh[lm.FOREHEAD_TOP], v.mesh[lm.CHIN]
        cx = (x0 + x1) / 2
        half_w = (x1 - x0) / 2 * 1.45  # hair and ears beside the face
        crown = top[1] - 0.9 * v.ied  # hair above the mesh's top edge
        cy = (crown + chin[1]) / 2
        half_h = (chin[1] - crown) / 2
        angle = math.degrees(math.atan2(v.eyes[1][1] - v.eyes[0][1], v.eyes[1][0] - v.eyes[0][0]))
        mask[ellipse_mask((h, w), (cx, cy), (half_w, half_h), angle) > 0] = 0
        mask[max(0, round(chin[1] - 0.3 * v.ied)):, :] = 0
        mask = cv2.erode(mask, np.ones((4, 4), np.uint8))
        return BackgroundView(view=v, mask=mask)

    def memo(self, key: str, factory: Callable[[], T]) -> T:
        """Per-session cache for intermediate results that several measures of one module share."""
        if key not in self._memo:
            self._memo[key] = factory()
        return self._memo[key]

    # -- measures -----------------------------------------------------------------------------------
    def result(self, name: str) -> MeasureResult:
        """The measure's result (computed once). Never raises for a registered measure."""
        if name in self._results:
            return self._results[name]
        spec = all_measures().get(name)
        if spec is None:
            raise KeyError(f"unknown measure {name!r}")
        try:
            out = spec.fn(self, self.config.params_for(name))
            raw, detail = (out if isinstance(out, tuple) else (out, {}))
            raw = float(raw)
            if not math.isfinite(raw):
                raise CannotAssess("value is not a finite number")
            result = MeasureResult(name=name, raw=raw, score=mapping.score(raw, self.config.score[name], name),
                                   detail=detail)
        except CannotAssess as exc:
            result = MeasureResult.failed(name, str(exc))
        except Exception as exc:  # noqa: BLE001 - a measure must never take the report down
            result = MeasureResult.failed(name, f"internal error in {name}: {type(exc).__name__}: {exc}")
        self._results[name] = result
        return result

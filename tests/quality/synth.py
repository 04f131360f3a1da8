"""Degradations of real photos for the quality tests: each one breaks exactly one thing a measure checks.

Everything works on a real image plus its analysed face (mesh and iris in image pixels), so the damage
lands where a real occluder, blur or lighting fault would. The closed-eye and occluder functions are
synthetic stand-ins because the shared photos contain no closed eyes, masks, caps or lens glare; each
says how it paints.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from appliance.vision import landmarks as lm
from appliance.vision.types import Face


def ied(face: Face) -> float:
    return float(np.linalg.norm(face.eyes[1] - face.eyes[0]))


def blur(image: np.ndarray, face: Face, fraction: float = 0.03) -> np.ndarray:
    """Gaussian blur with sigma = `fraction` x IED (3% of IED is ~3 px at the SAP 30 scale: visibly soft)."""
    return cv2.GaussianBlur(image, (0, 0), max(0.5, fraction * ied(face)))


def exposure(image: np.ndarray, gain: float) -> np.ndarray:
    """Scale linear light by `gain` (0.1: two stops under, 4: two stops over), clipping like a sensor."""
    lin = (image.astype(np.float32) / 255.0) ** 2.2 * gain
    return (np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def rotate(image: np.ndarray, face: Face, degrees: float) -> np.ndarray:
    """Rotate counter-clockwise (as seen) by `degrees` about the eye midpoint, edges replicated."""
    cx, cy = face.eyes.mean(axis=0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), degrees, 1.0)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def mirror(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def off_centre(image: np.ndarray, face: Face, side: str = "left") -> np.ndarray:
    """Crop so the face sits against one edge: only 0.6 IED between that edge and the nearer eye."""
    x_left, x_right = float(face.eyes[:, 0].min()), float(face.eyes[:, 0].max())
    margin = 0.6 * ied(face)
    if side == "left":
        return np.ascontiguousarray(image[:, max(0, round(x_left - margin)):])
    return np.ascontiguousarray(image[:, : round(x_right + margin)])


def downscale(image: np.ndarray, face: Face, target_ied: float) -> np.ndarray:
    """Resize (area averaging) so the inter-eye distance becomes `target_ied` pixels."""
    f = target_ied / ied(face)
    size = (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def paste_second_face(image: np.ndarray, face: Face, other: np.ndarray, other_face: Face,
                      relative_size: float = 0.6) -> np.ndarray:
    """Paste `other`'s face (its detection box, scaled to `relative_size` of the subject's box width)
    into the upper corner of `image` farthest from the subject."""
    out = image.copy()
    x0, y0, x1, y1 = (int(round(v)) for v in other_face.box)
    x0, y0 = max(0, x0), max(0, y0)
    patch = other[y0:y1, x0:x1]
    bw = face.box[2] - face.box[0]
    scale = relative_size * bw / max(1, patch.shape[1])
    pw, ph = max(8, round(patch.shape[1] * scale)), max(8, round(patch.shape[0] * scale))
    patch = cv2.resize(patch, (pw, ph), interpolation=cv2.INTER_AREA)
    h, w = image.shape[:2]
    left = face.eyes[:, 0].mean() > w / 2
    px = 2 if left else w - pw - 2
    out[2:2 + ph, px:px + pw] = patch[: h - 2, : w - px]
    return out


def head_ellipse(image: np.ndarray, face: Face) -> np.ndarray:
    """uint8 mask of the head and neck: the face oval enlarged for hair, plus the body below the chin."""
    mask = np.zeros(image.shape[:2], np.uint8)
    oval = face.mesh[list(lm.FACE_OVAL), :2]
    d = ied(face)
    cx, top, chin = oval[:, 0].mean(), oval[:, 1].min() - 0.9 * d, face.mesh[lm.CHIN, 1]
    half_w = (oval[:, 0].max() - oval[:, 0].min()) / 2 * 1.5
    cv2.ellipse(mask, (round(cx), round((top + chin) / 2)), (round(half_w), round((chin - top) / 2 + 0.1 * d)), 0,
                0, 360, 255, -1)
    body_top = round(chin - 0.2 * d)
    cv2.rectangle(mask, (round(cx - 2.6 * d), body_top), (round(cx + 2.6 * d), image.shape[0]), 255, -1)
    return mask


def cluttered_background(image: np.ndarray, face: Face, seed: int = 7) -> np.ndarray:
    """Replace everything outside the head and body with a busy texture (random coloured blocks + noise)."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    cell = max(4, round(ied(face) / 6))
    blocks = rng.integers(0, 256, (h // cell + 1, w // cell + 1, 3), dtype=np.uint8)
    texture = cv2.resize(blocks, ((w // cell + 1) * cell, (h // cell + 1) * cell), interpolation=cv2.INTER_NEAREST)
    texture = texture[:h, :w].astype(np.int16) + rng.integers(-40, 40, (h, w, 3), dtype=np.int16)
    texture = np.clip(texture, 0, 255).astype(np.uint8)
    keep = head_ellipse(image, face) > 0
    out = texture
    out[keep] = image[keep]
    return out


def close_eyes(image: np.ndarray, face: Face) -> np.ndarray:
    """Paint closed eyelids: cheek skin from below each eye is Poisson-blended over the eye opening
    (`cv2.seamlessClone`), then a dark lash line is drawn where a closed lid's lashes meet."""
    out = image.copy()
    m = face.mesh[:, :2]
    d = ied(face)
    shift = round(0.42 * d)
    source = np.roll(image, -shift, axis=0)
    for ring in (lm.RIGHT_EYE_RING, lm.LEFT_EYE_RING):
        pts = m[list(ring)]
        c = pts.mean(axis=0)
        big = c + (pts - c) * np.array([1.35, 2.3])
        mask = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round(big).astype(np.int32)], 255)
        x, y, w, h = cv2.boundingRect(mask)
        out = cv2.seamlessClone(source, out, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
        lower = m[[ring[i] for i in range(0, 9)]].copy()
        lower[:, 1] = lower[:, 1] * 0.7 + c[1] * 0.3
        cv2.polylines(out, [np.round(lower * 16).astype(np.int32)], False, (50, 35, 30), max(1, round(0.02 * d)),
                      cv2.LINE_AA, shift=4)
    return out


def sunglasses(image: np.ndarray, face: Face) -> np.ndarray:
    """Dark lenses (two filled ellipses, 0.9 x 0.6 IED) joined by a bridge, over both eyes."""
    out = image.copy()
    d = ied(face)
    (rx, ry), (lx, ly) = face.eyes
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    for x, y in face.eyes:
        cv2.ellipse(out, (round(x), round(y)), (round(0.45 * d), round(0.3 * d)), angle, 0, 360, (18, 18, 22), -1,
                    cv2.LINE_AA)
    bridge = max(2, round(0.06 * d))
    cv2.line(out, (round(rx), round(ry - 0.1 * d)), (round(lx), round(ly - 0.1 * d)), (18, 18, 22), bridge)
    return out


def medical_mask(image: np.ndarray, face: Face) -> np.ndarray:
    """A pale blue surgical mask: the face outline below the nose bridge filled with flat fabric colour."""
    out = image.copy()
    m = face.mesh[:, :2]
    oval = m[list(lm.FACE_OVAL)]
    nose_y = m[lm.NOSE_TIP, 1] - 0.1 * ied(face)
    lower = oval[oval[:, 1] >= nose_y]
    hull = cv2.convexHull(np.round(np.vstack([lower, m[[lm.RIGHT_FACE_EDGE, lm.LEFT_FACE_EDGE]]])).astype(np.int32))
    cv2.fillPoly(out, [hull], (150, 190, 215), cv2.LINE_AA)
    return out


def cap(image: np.ndarray, face: Face, colour: tuple[int, int, int] = (30, 60, 170)) -> np.ndarray:
    """A baseball cap: a coloured crown over the top of the head down to mid-forehead, plus a brim."""
    out = image.copy()
    m = face.mesh[:, :2]
    d = ied(face)
    top = m[lm.FOREHEAD_TOP]
    oval = m[list(lm.FACE_OVAL)]
    half_w = (oval[:, 0].max() - oval[:, 0].min()) / 2 * 1.1
    brim_y = top[1] + 0.25 * d
    crown = (round(half_w), round(1.2 * d))
    cv2.ellipse(out, (round(top[0]), round(brim_y)), crown, 0, 180, 360, colour, -1, cv2.LINE_AA)
    cv2.ellipse(out, (round(top[0]), round(brim_y)), (round(half_w * 1.05), round(0.18 * d)), 0, 0, 360,
                tuple(int(c * 0.7) for c in colour), -1, cv2.LINE_AA)
    return out


def lens_glare(image: np.ndarray, face: Face) -> np.ndarray:
    """White specular blobs (0.35 x 0.15 IED) on each spectacle lens, as a flash reflection makes."""
    out = image.copy()
    d = ied(face)
    for x, y in face.eyes:
        cv2.ellipse(out, (round(x + 0.1 * d), round(y - 0.05 * d)), (round(0.18 * d), round(0.08 * d)), -20, 0, 360,
                    (255, 255, 255), -1, cv2.LINE_AA)
    return out


def turn_head(image: np.ndarray, face: Face, yaw: float = 0.0, pitch: float = 0.0) -> np.ndarray:
    """The same photo with the head turned in 3D: `yaw` degrees towards the subject's right (their nose
    moves towards the image's left), `pitch` degrees chin up (the nose moves up the picture).

    The face mesh (x, y in pixels, z relative depth on the same scale, negative towards the camera) is
    rotated about its centroid and projected orthographically; the picture is then warped piecewise
    affinely from the old mesh to the new one, with a fixed ring of points well outside the head so the
    background does not move. Small angles (up to ~15 degrees) look like a real turn; the hidden side is
    not invented, so large angles would smear.
    """
    from skimage.transform import PiecewiseAffineTransform

    pts = face.mesh[:, :3].astype(np.float64)
    centre = pts.mean(axis=0)
    rel = pts - centre
    # Sign so that a positive angle moves the nose tip (the point nearest the camera) left / up.
    s = -1.0 if rel[lm.NOSE_TIP, 2] < 0 else 1.0
    a, b = math.radians(yaw), math.radians(pitch)
    x = rel[:, 0] * math.cos(a) - s * rel[:, 2] * math.sin(a)
    z = s * rel[:, 0] * math.sin(a) + rel[:, 2] * math.cos(a)
    y = rel[:, 1] * math.cos(b) - s * z * math.sin(b)
    moved = np.stack([x, y], axis=1) + centre[:2]
    h, w = image.shape[:2]
    span = float(np.ptp(rel[:, :2], axis=0).max())
    ring = [centre[:2] + 1.3 * span * np.array([math.cos(t), math.sin(t)]) for t in np.linspace(0, 2 * math.pi, 24,
                                                                                               endpoint=False)]
    fixed = np.vstack([np.array(ring), [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]])
    src = np.vstack([pts[:, :2], fixed])
    dst = np.vstack([moved, fixed])
    # The inverse map (output pixel -> source pixel) on a 4-pixel grid, smoothly enlarged: the warp is
    # affine within each triangle, so the coarse grid loses nothing visible and is ~16x faster.
    tform = PiecewiseAffineTransform.from_estimate(dst, src)
    step = 4
    gy, gx = np.mgrid[0:h + step:step, 0:w + step:step]
    grid = tform(np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64))
    maps = [cv2.resize(grid[:, i].reshape(gx.shape).astype(np.float32), (gx.shape[1] * step, gx.shape[0] * step),
                       interpolation=cv2.INTER_LINEAR)[:h, :w] for i in (0, 1)]
    return cv2.remap(image, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def glasses(image: np.ndarray, face: Face, colour: tuple[int, int, int] = (28, 24, 22)) -> np.ndarray:
    """Dark spectacle frames: an elliptical rim (0.40 x 0.30 IED half-axes) round each eye, a bridge across
    the nose a little above the eye line and the arms running to the temples; rims 0.05 IED thick."""
    out = image.copy()
    d = ied(face)
    (rx, ry), (lx, ly) = face.eyes
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    t = max(2, round(0.05 * d))
    axes = (round(0.40 * d), round(0.30 * d))
    for x, y in face.eyes:
        cv2.ellipse(out, (round(x), round(y)), axes, angle, 0, 360, colour, t, cv2.LINE_AA)
    ux, uy = (lx - rx) / d, (ly - ry) / d
    lift = (uy * 0.08 * d, -ux * 0.08 * d)  # up the face, perpendicular to the eye line
    inner_r = (rx + ux * 0.40 * d + lift[0], ry + uy * 0.40 * d + lift[1])
    inner_l = (lx - ux * 0.40 * d + lift[0], ly - uy * 0.40 * d + lift[1])
    cv2.line(out, tuple(round(v) for v in inner_r), tuple(round(v) for v in inner_l), colour, t, cv2.LINE_AA)
    for (x, y), sign in ((face.eyes[0], -1), (face.eyes[1], 1)):
        start = (x + sign * ux * 0.40 * d, y + sign * uy * 0.40 * d)
        end = (x + sign * ux * 0.95 * d, y + sign * uy * 0.95 * d)
        cv2.line(out, tuple(round(v) for v in start), tuple(round(v) for v in end), colour, t, cv2.LINE_AA)
    return out


def eye_skin_brightened(image: np.ndarray, face: Face, gain: float = 6.0) -> np.ndarray:
    """The skin round the eyes washed out, as a flash too close or a bright key light does: linear light
    multiplied by up to `gain` under a soft mask (eye sockets, upper cheeks and nose bridge), clipping
    like a sensor."""
    d = ied(face)
    mask = np.zeros(image.shape[:2], np.float32)
    for x, y in face.eyes:
        cv2.ellipse(mask, (round(x), round(y + 0.1 * d)), (round(0.6 * d), round(0.45 * d)), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.12 * d)[..., None]
    lin = (image.astype(np.float32) / 255.0) ** 2.2
    lin = lin * (1.0 + (gain - 1.0) * mask)
    return (np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def skin_highlights(image: np.ndarray, face: Face) -> np.ndarray:
    """Specular spots on bare skin inside the lens zones (below and beside each eye, on the nose bridge),
    the size of the glare blobs in `lens_glare`: flash on oily skin, not on glass."""
    out = image.copy()
    d = ied(face)
    (rx, ry), (lx, ly) = face.eyes
    spots = [(rx, ry + 0.24 * d), (lx, ly + 0.24 * d), (rx - 0.3 * d, ry + 0.12 * d), (lx + 0.3 * d, ly + 0.12 * d),
             ((rx + lx) / 2, (ry + ly) / 2 + 0.05 * d)]
    for x, y in spots:
        cv2.ellipse(out, (round(x), round(y)), (round(0.12 * d), round(0.06 * d)), -15, 0, 360, (255, 255, 255), -1,
                    cv2.LINE_AA)
    return out

"""Drawing a posed figure over a background: shaded shapes, a clothing pattern, a moving camera.

The figure is built from analytic shapes evaluated per pixel (no mesh, no dependency beyond
numpy and OpenCV): the torso is a tapered cylinder around the neck-pelvis axis, the limbs are
tapered capsules, the head an ellipsoid. Each shape gets a pseudo-3-D surface normal (round
across its axis), lit by one light per clip with ambient + diffuse + a little specular, so the
figure reads as a solid body rather than a stick figure. The clothing pattern is evaluated in
the part's own (across, along) coordinates, so stripes and checks move with the limb. Parts are
painted back to front by their depth after the facing yaw. Shapes are drawn at twice the output
size and area-averaged down, which antialiases the edges; the figure mask is the pixels more
than half covered.

The scene is a background wider than the frame (gradient, smooth noise, or a wall and a floor);
the camera zooms and pans slightly over the clip, and the figure is moved with the same camera,
so it stays where it stands in the scene.
"""

from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np

from controlnext_jax.synthetic.identity import Identity
from controlnext_jax.synthetic.motion import Track, smoothstep
from controlnext_jax.synthetic.skeleton import JOINT, BoneLengths

SUPERSAMPLE = 2
BACKGROUNDS = ("gradient", "noise", "room")
AMBIENT, DIFFUSE, SPECULAR = 0.42, 0.62, 0.12


# --------------------------------------------------------------------------- camera
@dataclasses.dataclass(frozen=True)
class Camera:
    """Per frame: image = (scene - centre) * zoom + centre + pan (pixels)."""

    zoom: np.ndarray  # (T,) >= 1
    pan: np.ndarray  # (T, 2)
    max_pan: float
    max_zoom: float


def camera_path(rng: np.random.Generator, frames: int, height: int, width: int) -> Camera:
    """A small eased pan and zoom over the clip (a few percent of the frame)."""
    e = smoothstep(np.linspace(0.0, 1.0, frames)) if frames > 1 else np.zeros(1)
    zoom_amount = rng.uniform(0.0, 0.06)
    zoom = 1.0 + zoom_amount * (e if rng.uniform() < 0.5 else 1.0 - e)
    angle = rng.uniform(0, 2 * np.pi)
    pan_amount = rng.uniform(0.0, 0.05) * min(height, width)
    pan = pan_amount * (e[:, None] - 0.5) * np.array([np.cos(angle), np.sin(angle)])
    return Camera(zoom=zoom, pan=pan, max_pan=pan_amount / 2 + 1e-9, max_zoom=1.0 + zoom_amount)


# ------------------------------------------------------------------------ background
def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, bicubic-upsampled."""
    grid = rng.uniform(0, 1, (cells, max(2, int(cells * width / height)))).astype(np.float32)
    return np.clip(cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC), 0, 1)


def _random_colour(rng: np.random.Generator, value=(0.2, 0.95), saturation=(0.05, 0.7)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value)), np.float32)


def make_background(rng: np.random.Generator, height: int, width: int, horizon: float) -> np.ndarray:
    """(height, width, 3) float32 scene background; `horizon` is the wall/floor line (rows)."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (xs * np.cos(angle) + ys * np.sin(angle))
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
        top, bottom = _random_colour(rng), _random_colour(rng)
        image = top + (bottom - top) * ramp[..., None]
    elif kind == "noise":
        a, b, c = _random_colour(rng), _random_colour(rng), _random_colour(rng)
        n1 = _smooth_noise(rng, height, width, int(rng.integers(3, 9)))[..., None]
        n2 = _smooth_noise(rng, height, width, int(rng.integers(6, 16)))[..., None]
        image = (a + (b - a) * n1) * (1 - 0.5 * n2) + c * 0.5 * n2
    else:
        wall, floor = _random_colour(rng, value=(0.45, 0.95)), _random_colour(rng, value=(0.2, 0.7))
        image = np.empty((height, width, 3), np.float32)
        image[:] = wall
        if rng.uniform() < 0.5:  # wallpaper stripes
            period = rng.uniform(0.04, 0.12) * width
            image *= (1.0 - 0.08 * (np.sin(2 * np.pi * xs / period) > 0))[..., None]
        image *= (0.9 + 0.1 * _smooth_noise(rng, height, width, 5))[..., None]
        row = int(np.clip(horizon, 1, height - 1))
        depth = np.clip((ys - row) / max(height - row, 1), 0, 1)[..., None]  # 0 at the horizon
        floor_image = floor * (0.75 + 0.35 * depth)
        boards = np.zeros((height, width), np.float32)
        vanish_x = width * rng.uniform(0.3, 0.7)
        for k in np.linspace(-3.0, 4.0, int(rng.integers(10, 24))):  # floor boards towards a vanishing point
            cv2.line(boards, (int(vanish_x), row), (int(vanish_x + k * width), height * 3), 1.0, 1, cv2.LINE_AA)
        floor_image *= (1.0 - 0.25 * boards)[..., None]
        image[row:] = floor_image[row:]
        image[max(row - max(2, height // 60), 0):row] *= 0.6  # skirting board
    image = image * (0.95 + 0.1 * _smooth_noise(rng, height, width, 24))[..., None]  # fine texture
    return np.clip(image, 0, 1).astype(np.float32)


# --------------------------------------------------------------------------- shading
def _lit(nx: np.ndarray, ny: np.ndarray, nz: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Brightness of a surface with normal (nx, ny, nz) (image axes: x right, y down, z out)."""
    diffuse = np.maximum(nx * light[0] + ny * light[1] + nz * light[2], 0.0)
    half = light + np.array([0.0, 0.0, 1.0])
    half = half / np.linalg.norm(half)
    specular = np.maximum(nx * half[0] + ny * half[1] + nz * half[2], 0.0) ** 24
    return AMBIENT + DIFFUSE * diffuse + SPECULAR * specular


def _pattern(identity: Identity, across: np.ndarray, along: np.ndarray) -> np.ndarray:
    """Weight of the second clothing colour at part coordinates (body units)."""
    period = identity.pattern_scale
    if identity.pattern == "stripes":
        return (np.sin(2 * np.pi * along / period) > 0.2).astype(np.float32)
    if identity.pattern == "checks":
        return ((np.floor(across / period) + np.floor(along / period)) % 2).astype(np.float32)
    if identity.pattern == "dots":
        du = across / period - np.round(across / period)
        dv = along / period - np.round(along / period)
        return (du * du + dv * dv < 0.09).astype(np.float32)
    return np.zeros_like(along, np.float32)


@dataclasses.dataclass
class _Canvas:
    colour: np.ndarray  # (H, W, 3) float32, supersampled
    cover: np.ndarray  # (H, W) float32 0/1
    light: np.ndarray
    scale: float  # pixels per body unit, supersampled

    def roi(self, lo: np.ndarray, hi: np.ndarray):
        h, w = self.cover.shape
        x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
        x1, y1 = min(int(np.ceil(hi[0])) + 1, w), min(int(np.ceil(hi[1])) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return None
        ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64) + 0.5  # pixel centres
        return (slice(y0, y1), slice(x0, x1)), xs, ys

    def paint(self, where, inside: np.ndarray, colour: np.ndarray) -> None:
        self.colour[where][inside] = colour[inside]
        self.cover[where][inside] = 1.0


def _capsule(canvas: _Canvas, p0, p1, r0: float, r1: float, albedo) -> None:
    """A tapered capsule from p0 (radius r0) to p1 (radius r1), pixels; `albedo(across, along)`
    gives (..., 3) colours from part coordinates in body units."""
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    r = max(r0, r1)
    box = canvas.roi(np.minimum(p0, p1) - r - 1, np.maximum(p0, p1) + r + 1)
    if box is None:
        return
    where, xs, ys = box
    d = p1 - p0
    length2 = max(float(d @ d), 1e-9)
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / length2, 0.0, 1.0)
    ox, oy = xs - (p0[0] + t * d[0]), ys - (p0[1] + t * d[1])
    radius = r0 + (r1 - r0) * t
    dist2 = ox * ox + oy * oy
    inside = dist2 <= radius * radius
    nx, ny = ox / radius, oy / radius
    nz = np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.0))
    unit = d / np.sqrt(length2)
    across = (unit[0] * oy - unit[1] * ox) / canvas.scale
    along = t * np.sqrt(length2) / canvas.scale
    colour = albedo(across, along) * _lit(nx, ny, nz, canvas.light)[..., None]
    canvas.paint(where, inside, colour)


def _solid(rgb):
    rgb = np.asarray(rgb, np.float64)
    return lambda across, along: np.broadcast_to(rgb, (*along.shape, 3))


def _cloth(identity: Identity):
    first, second = np.asarray(identity.shirt), np.asarray(identity.shirt_second)

    def albedo(across, along):
        w = _pattern(identity, across, along)[..., None]
        return first * (1 - w) + second * w
    return albedo


# ---------------------------------------------------------------------------- figure
@dataclasses.dataclass(frozen=True)
class View:
    """Where the figure's body units land in the image in one frame: image = origin + scale * (x, -y)."""

    origin: np.ndarray  # (2,) pixels
    scale: float  # pixels per body unit

    def project(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64)
        return self.origin + self.scale * np.stack([points[..., 0], -points[..., 1]], -1)


def _torso(canvas: _Canvas, identity: Identity, bones: BoneLengths, joints3, forward3, proj) -> None:
    build = identity.proportions.build
    neck, pelvis = proj(joints3[JOINT["neck"]]), proj(0.5 * (joints3[JOINT["right_hip"]] + joints3[JOINT["left_hip"]]))
    axis = pelvis - neck
    length = max(float(np.hypot(*axis)), 1e-6)
    unit = axis / length
    normal = np.array([-unit[1], unit[0]])

    def half_extent(half_width3, half_depth):  # the torso's elliptic section seen across the axis
        w2 = half_width3[:2] * np.array([1.0, -1.0]) * canvas.scale
        d2 = forward3[:2] * np.array([1.0, -1.0]) * half_depth * canvas.scale
        return float(np.hypot(w2 @ normal, d2 @ normal))

    shoulders = half_extent(0.5 * (joints3[JOINT["left_shoulder"]] - joints3[JOINT["right_shoulder"]]), 0.07 * build)
    hip_width = 0.5 * (joints3[JOINT["left_hip"]] - joints3[JOINT["right_hip"]])
    hips = half_extent(hip_width * (1 + 0.045 * build / bones.hip_half), 0.075 * build)
    waist = 0.8 * max(0.5 * (shoulders + hips), 0.09 * build * canvas.scale * 0.5)
    # half-width along the axis (fraction of neck -> pelvis): collar, shoulders, waist, hips, crotch
    stops = np.array([-0.04, 0.1, 0.55, 0.9, 1.1])
    halves = np.array([0.45 * shoulders, shoulders, max(waist, 0.7 * min(shoulders, hips)), hips, 0.85 * hips])
    corners = [neck + unit * length * f + normal * h * s for f, h in zip(stops, halves) for s in (-1, 1)]
    box = canvas.roi(np.min(corners, 0) - 1, np.max(corners, 0) + 1)
    if box is None:
        return
    where, xs, ys = box
    rx, ry = xs - neck[0], ys - neck[1]
    f = (rx * unit[0] + ry * unit[1]) / length
    d = rx * normal[0] + ry * normal[1]
    half = np.interp(f, stops, halves)
    inside = (f >= stops[0]) & (f <= stops[-1]) & (np.abs(d) <= half)
    u = np.clip(d / np.maximum(half, 1e-6), -1.0, 1.0)
    nz = np.sqrt(1.0 - u * u)
    light = _lit(u * normal[0], u * normal[1], nz, canvas.light)
    shirt = _cloth(identity)(d / canvas.scale, f * length / canvas.scale)
    pants = np.asarray(identity.pants)
    belt = 0.62
    colour = np.where((f > belt)[..., None], pants, shirt)
    colour = np.where((np.abs(f - belt) < 0.025)[..., None], pants * 0.55, colour)  # a belt line
    canvas.paint(where, inside, colour * light[..., None])


def _head(canvas: _Canvas, identity: Identity, bones: BoneLengths, track: Track, i: int, proj) -> None:
    centre = proj(track.head_center[i])
    up3, fwd3 = track.head_up[i], track.head_forward[i]
    left3 = np.cross(up3, fwd3)
    up2 = np.array([up3[0], -up3[1]])
    up2 = up2 / max(float(np.hypot(*up2)), 1e-6)
    right2 = np.array([-up2[1], up2[0]])  # image-right when upright
    # the ellipsoid's outline across: ear-to-ear and nose-to-back axes seen from the front
    half_w = canvas.scale * float(np.hypot(bones.head_x * left3[0], bones.head_z * fwd3[0]))
    half_h = canvas.scale * bones.head_y
    r = max(half_w, half_h)
    box = canvas.roi(centre - r - 1, centre + r + 1)
    if box is None:
        return
    where, xs, ys = box
    rx, ry = xs - centre[0], ys - centre[1]
    ex = (rx * right2[0] + ry * right2[1]) / half_w
    ey = -(rx * up2[0] + ry * up2[1]) / half_h  # + downwards
    rho = ex * ex + ey * ey
    inside = rho <= 1.0
    ez = np.sqrt(np.maximum(1.0 - rho, 0.0))
    nx, ny = ex * right2[0] - ey * up2[0], ex * right2[1] - ey * up2[1]
    skin = np.asarray(identity.skin)
    colour = np.broadcast_to(skin, (*ex.shape, 3)).copy()
    if identity.hair_style != "bald":
        # the surface normal in scene axes (y up): hair on the crown and the back of the head
        n3 = np.stack([nx, -ny, ez], -1)
        hairline = 0.5 if identity.hair_style == "short" else 0.4
        hair = (n3 @ up3 > hairline) | (n3 @ fwd3 < -0.3)
        colour[hair] = identity.hair
    canvas.paint(where, inside, colour * _lit(nx, ny, ez, canvas.light)[..., None])


def _face(canvas: _Canvas, identity: Identity, bones: BoneLengths, track: Track, i: int, proj) -> None:
    """Eyes and a mouth on the side facing the camera."""
    eye_radius = max(0.12 * bones.head_x * canvas.scale, 0.8)
    dark = np.asarray(identity.hair) * 0.3
    for name in ("right_eye", "left_eye"):
        j = JOINT[name]
        if track.visible[i, j]:
            _capsule(canvas, proj(track.joints[i, j]), proj(track.joints[i, j]), eye_radius, eye_radius,
                     _solid(dark))
    up3, fwd3 = track.head_up[i], track.head_forward[i]
    if fwd3[2] > 0.3:
        left3 = np.cross(up3, fwd3)
        mouth = track.head_center[i] - 0.55 * bones.head_y * up3 + 0.8 * bones.head_z * fwd3
        half = 0.25 * bones.head_x * left3
        _capsule(canvas, proj(mouth - half), proj(mouth + half), 0.6 * eye_radius, 0.6 * eye_radius,
                 _solid(np.asarray(identity.skin) * np.array([0.6, 0.3, 0.3])))


def draw_figure(canvas: _Canvas, identity: Identity, bones: BoneLengths, track: Track, i: int, view: View) -> None:
    """Paint frame `i` of the posed figure, back to front."""
    proj = view.project
    joints3 = track.joints[i]
    build = identity.proportions.build
    skin, shirt = np.asarray(identity.skin), _cloth(identity)
    pants, shoes = np.asarray(identity.pants), np.asarray(identity.shoes)
    px = canvas.scale
    parts = []  # (depth, order, draw)

    def z(*points):
        return float(np.mean([p[2] for p in points]))

    def capsule(a3, b3, r0, r1, albedo, bias):
        parts.append((z(a3, b3) + bias, len(parts),
                      lambda: _capsule(canvas, proj(a3), proj(b3), r0 * px, r1 * px, albedo)))

    for k, side in enumerate(("right", "left")):
        shoulder, elbow, wrist = (joints3[JOINT[f"{side}_{p}"]] for p in ("shoulder", "elbow", "wrist"))
        hip, knee, ankle = (joints3[JOINT[f"{side}_{p}"]] for p in ("hip", "knee", "ankle"))
        capsule(shoulder, elbow, 0.034 * build, 0.029 * build, shirt, 0.04)
        capsule(elbow, wrist, 0.029 * build, 0.025 * build, shirt if identity.long_sleeves else _solid(skin), 0.045)
        capsule(wrist, track.hand_tips[i, k], 0.027 * build, 0.021 * build, _solid(skin), 0.05)
        capsule(hip, knee, 0.052 * build, 0.041 * build, _solid(pants), 0.0)
        capsule(knee, ankle, 0.04 * build, 0.028 * build, _solid(skin) if identity.shorts else _solid(pants), 0.005)
        capsule(ankle, track.toes[i, k], 0.03 * build, 0.026 * build, _solid(shoes), 0.01)
    pelvis = 0.5 * (joints3[JOINT["right_hip"]] + joints3[JOINT["left_hip"]])
    parts.append((z(joints3[JOINT["neck"]], pelvis) + 0.03, len(parts),
                  lambda: _torso(canvas, identity, bones, joints3, track.body_forward[i], proj)))
    neck_radius = 0.03 * np.sqrt(build)
    capsule(joints3[JOINT["neck"]], track.head_center[i], neck_radius, neck_radius, _solid(skin), 0.04)
    up3, fwd3 = track.head_up[i], track.head_forward[i]
    if identity.hair_style == "long":  # hair falling behind the head to the shoulders
        top = track.head_center[i] - 0.4 * bones.head_z * fwd3
        bottom = top - 1.6 * bones.head_y * up3 - 0.3 * bones.head_z * fwd3
        capsule(top, bottom, 0.95 * bones.head_x, 0.8 * bones.head_x, _solid(identity.hair), 0.03)
    parts.append((track.head_center[i][2] + 0.1, len(parts), lambda: _head(canvas, identity, bones, track, i, proj)))
    parts.append((track.head_center[i][2] + 0.11, len(parts), lambda: _face(canvas, identity, bones, track, i, proj)))
    for _, _, draw in sorted(parts, key=lambda p: (p[0], p[1])):
        draw()


def _shadow(background: np.ndarray, track: Track, i: int, view: View, ground: float) -> np.ndarray:
    """A soft contact shadow under the feet (smaller and lighter while the figure is in the air)."""
    feet = 0.5 * (track.joints[i, JOINT["right_ankle"]] + track.joints[i, JOINT["left_ankle"]])
    height = max(float(min(track.joints[i, JOINT["right_ankle"], 1], track.joints[i, JOINT["left_ankle"], 1])) - ground,
                 0.0)
    fade = 1.0 / (1.0 + 8.0 * height)
    centre = view.project(np.array([feet[0], 0.0, 0.0]))
    h, w = background.shape[:2]
    layer = np.zeros((h, w), np.float32)
    axes = (max(int(0.16 * view.scale), 1), max(int(0.035 * view.scale), 1))
    cv2.ellipse(layer, (int(centre[0]), int(centre[1])), axes, 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    sigma = max(0.02 * view.scale, 0.5)
    layer = cv2.GaussianBlur(layer, (0, 0), sigma)
    return background * (1.0 - 0.45 * fade * layer)[..., None]


def render_frame(background: np.ndarray, identity: Identity, bones: BoneLengths, track: Track, i: int,
                 view: View, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame (uint8 RGB) and the figure mask (bool) of frame `i`; `background` is this frame's
    (height, width, 3) float32 view of the scene."""
    h, w = background.shape[:2]
    ss = SUPERSAMPLE
    canvas = _Canvas(colour=np.zeros((h * ss, w * ss, 3), np.float32), cover=np.zeros((h * ss, w * ss), np.float32),
                     light=np.asarray(light, np.float64), scale=view.scale * ss)
    big = View(origin=view.origin * ss, scale=view.scale * ss)
    draw_figure(canvas, identity, bones, track, i, big)
    cover = cv2.resize(canvas.cover, (w, h), interpolation=cv2.INTER_AREA)
    colour = cv2.resize(canvas.colour * canvas.cover[..., None], (w, h), interpolation=cv2.INTER_AREA)
    scene = _shadow(background, track, i, view, ground=bones.ankle_height)
    out = scene * (1.0 - cover[..., None]) + colour
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), cover >= 0.5


def light_direction(rng: np.random.Generator) -> np.ndarray:
    """A light from the front, above and to one side (image axes: x right, y down, z out)."""
    v = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.9, -0.2), rng.uniform(0.5, 1.0)])
    return v / np.linalg.norm(v)

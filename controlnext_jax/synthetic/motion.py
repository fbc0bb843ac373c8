"""How a synthetic figure moves: joint angles as smooth functions of time, then 3-D keypoints by
forward kinematics.

Each motion family (`MOTIONS`) is a set of sinusoids with eased (smoothstep) starts and
transitions, so the keypoints change smoothly from frame to frame; a clip draws its own tempo,
amplitude, phase, facing direction and family-specific values (`draw_params`). The skeleton is
posed in 3-D (x: the figure's left, which is the image's right when it faces the camera; y: up;
z: towards the camera), rotated by the facing yaw and projected orthographically, so a turning
figure's shoulders and hips foreshorten and its far-side face points disappear. The feet are
kept on the ground: after posing, the figure is raised or lowered so that its lower ankle stands
at ankle height (plus the jump's lift).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from controlnext_jax.synthetic.skeleton import JOINT, NUM_BODY, BoneLengths

MOTIONS = ("walk", "wave", "dance", "turn", "jump", "idle_sway")
SIDES = {"r": -1.0, "l": 1.0}  # the figure's right side is at -x
# Facing-direction ranges (radians, 0 faces the camera) per family: walking may cross the frame
# near profile, waving and dancing face the camera more.
_YAW_RANGE = {"walk": 1.2, "wave": 0.6, "dance": 0.5, "turn": np.pi, "jump": 0.8, "idle_sway": 0.7}
# A face point counts as visible when its outward normal points this much towards the camera
# (ears lie on the side of the head, so they stay visible a little past the profile).
# 1 / body units: the smooth minimum is within log(2) / 40 ~ 0.017 of the lower ankle
_GROUND_SHARPNESS = 40.0
_FACE_NORMALS = {"nose": ((0.0, 0.0, 1.0), 0.15), "right_eye": ((-0.35, 0.0, 1.0), 0.15),
                 "left_eye": ((0.35, 0.0, 1.0), 0.15), "right_ear": ((-1.0, 0.0, -0.1), -0.4),
                 "left_ear": ((1.0, 0.0, -0.1), -0.4)}


@dataclasses.dataclass(frozen=True)
class MotionParams:
    speed: float  # tempo factor
    amplitude: float  # factor on the family's joint excursions
    phase: float  # radians into the cycle at t = 0
    yaw: float  # facing at t = 0 (radians, 0 = towards the camera, + = towards the image's right)
    side: float  # -1 right, +1 left: the waving hand, the turning direction
    extra: float  # walk: drift speed (body units / s); turn: angle of each turn (radians)


@dataclasses.dataclass(frozen=True)
class Track:
    """A posed figure over T frames, in body units (y up, the ground at y = 0)."""

    joints: np.ndarray  # (T, 18, 3) OpenPose-18 joints
    visible: np.ndarray  # (T, 18) bool: the face points facing the camera; body joints always
    head_center: np.ndarray  # (T, 3)
    head_up: np.ndarray  # (T, 3) unit vectors of the head's axes
    head_forward: np.ndarray  # (T, 3)
    body_forward: np.ndarray  # (T, 3) the chest's facing direction
    hand_tips: np.ndarray  # (T, 2, 3) right, left fingertips
    toes: np.ndarray  # (T, 2, 3) right, left


def draw_params(motion: str, rng: np.random.Generator) -> MotionParams:
    """One clip's variation of a motion family."""
    if motion not in MOTIONS:
        raise ValueError(f"motion={motion!r}: allowed values are {', '.join(MOTIONS)}")
    yaw_range = _YAW_RANGE[motion]
    side = float(rng.choice((-1.0, 1.0)))
    extra = {"walk": rng.uniform(0.0, 0.15), "turn": side * rng.uniform(np.pi / 2, np.pi)}.get(motion, 0.0)
    return MotionParams(speed=float(rng.uniform(0.8, 1.25)), amplitude=float(rng.uniform(0.75, 1.2)),
                        phase=float(rng.uniform(0, 2 * np.pi)), yaw=float(rng.uniform(-yaw_range, yaw_range)),
                        side=side, extra=float(extra))


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 -> 1 with zero slope at both ends: the eased timing of starts and transitions."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _bump(u: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """A smooth raised-cosine pulse of height 1 at `centre`, zero outside +-half_width."""
    d = np.abs(u - centre) / half_width
    return np.where(d < 1.0, np.cos(0.5 * np.pi * np.minimum(d, 1.0)) ** 2, 0.0)


def _rest(t: np.ndarray) -> dict[str, np.ndarray]:
    zero = np.zeros_like(t)
    angles = {k: zero.copy() for k in ("root_x", "lift", "yaw", "lean", "tilt", "twist", "pelvis_tilt",
                                       "head_yaw", "head_pitch", "head_roll")}
    for s in SIDES:
        angles.update({f"{s}_sh_abd": zero + 0.12, f"{s}_sh_flex": zero.copy(), f"{s}_el_abd": zero.copy(),
                       f"{s}_el_flex": zero + 0.2, f"{s}_hip_abd": zero + 0.03, f"{s}_hip_flex": zero.copy(),
                       f"{s}_knee": zero + 0.03})
    return angles


def _walk(t, p, a):
    phi = 2 * np.pi * 0.9 * p.speed * t + p.phase
    amp = p.amplitude
    for s, shift in (("r", 0.0), ("l", np.pi)):
        ph = phi + shift
        a[f"{s}_hip_flex"] = 0.42 * amp * np.sin(ph)
        a[f"{s}_knee"] = 0.08 + 0.75 * amp * ((1 + np.cos(ph)) / 2) ** 2  # bent most mid-swing
        a[f"{s}_sh_flex"] = -0.38 * amp * np.sin(ph)  # arms swing against the legs
        a[f"{s}_el_flex"] = 0.25 + 0.25 * amp * (1 - np.sin(ph)) / 2
    a["twist"] = 0.12 * amp * np.sin(phi)
    a["head_yaw"] = -a["twist"]  # the head keeps looking ahead
    a["lean"] += 0.06
    a["yaw"] += p.yaw
    a["root_x"] = p.extra * np.sin(p.yaw) * t  # walking drifts the way the figure faces


def _wave(t, p, a):
    w = 2 * np.pi * 1.2 * p.speed
    up = smoothstep(t * p.speed / 1.0)  # the arm rises over the first second
    s = "r" if p.side < 0 else "l"
    a[f"{s}_sh_abd"] = 0.12 + up * (1.95 + 0.25 * (p.amplitude - 1))
    a[f"{s}_sh_flex"] = up * 0.25
    a[f"{s}_el_abd"] = up * (0.55 + 0.45 * p.amplitude * np.sin(w * t + p.phase))
    o = "l" if s == "r" else "r"
    a[f"{o}_sh_abd"] = 0.12 + 0.04 * np.sin(0.5 * w * t)
    a["tilt"] = -p.side * 0.04 * up
    a["head_roll"] = 0.08 * p.side * np.sin(0.25 * w * t + p.phase)
    a["pelvis_tilt"] = 0.03 * np.sin(0.3 * w * t)
    a["yaw"] += p.yaw


def _dance(t, p, a):
    phi = 2 * np.pi * 0.7 * p.speed * t + p.phase
    amp = p.amplitude
    bounce = 0.35 * amp * (1 + np.cos(2 * phi)) / 2
    for s, shift in (("r", 0.0), ("l", np.pi)):
        a[f"{s}_sh_abd"] = 1.1 + 0.7 * amp * np.sin(phi + shift)
        a[f"{s}_sh_flex"] = 0.3 + 0.3 * np.sin(2 * phi + shift)
        a[f"{s}_el_abd"] = 0.4 + 0.3 * np.sin(phi + shift + 1.0)
        a[f"{s}_el_flex"] = 0.3 + 0.0 * t
        a[f"{s}_knee"] = 0.05 + bounce
        a[f"{s}_hip_flex"] = 0.5 * bounce  # knees forward, feet under the hips
    a["lean"] = 0.15 * bounce
    a["pelvis_tilt"] = 0.08 * amp * np.sin(phi)
    a["root_x"] = 0.04 * amp * np.sin(phi)
    a["tilt"] = -0.06 * amp * np.sin(phi)
    a["head_roll"] = 0.1 * np.sin(phi)
    a["yaw"] += p.yaw + 0.4 * amp * np.sin(0.5 * phi)


def _turn(t, p, a):
    start, duration = 0.3 / p.speed, abs(p.extra) / (2.2 * p.speed)
    period = duration + 0.6 / p.speed  # a pause between turns
    elapsed = np.maximum(t - start, 0.0)
    k = np.floor(elapsed / period)
    x = np.clip((elapsed - k * period) / duration, 0.0, 1.0)
    a["yaw"] += p.yaw + p.extra * (k + smoothstep(x))
    effort = 6 * x * (1 - x)  # smoothstep's slope: the small steps follow the turning speed
    step = 2 * np.pi * 1.6 * p.speed * t
    for s, shift in (("r", 0.0), ("l", np.pi)):
        lift = 0.25 * p.amplitude * effort * (1 + np.sin(step + shift)) / 2
        a[f"{s}_hip_flex"] = lift
        a[f"{s}_knee"] = 0.03 + 2 * lift
        a[f"{s}_sh_abd"] = 0.15 + 0.1 * effort
        a[f"{s}_sh_flex"] = -0.2 * lift
    a["head_yaw"] = 0.25 * np.sign(p.extra) * effort  # the head leads the turn


def _jump(t, p, a):
    u = np.mod(t * p.speed / 2.0 + p.phase / (2 * np.pi), 1.0)
    amp = p.amplitude
    before, after = _bump(u, 0.18, 0.16), _bump(u, 0.86, 0.14)
    flight = np.where((u > 0.34) & (u < 0.72), np.sin(np.pi * (u - 0.34) / 0.38) ** 2, 0.0)
    crouch = 0.9 * amp * (before + after)
    a["lift"] = 0.14 * amp * flight
    a["lean"] = 0.25 * crouch
    for s in SIDES:
        a[f"{s}_knee"] = 0.05 + crouch + 0.3 * flight
        a[f"{s}_hip_flex"] = 0.55 * crouch + 0.15 * flight
        a[f"{s}_sh_flex"] = -0.5 * before + 1.6 * amp * _bump(u, 0.53, 0.33)  # swing back, then up
        a[f"{s}_sh_abd"] = 0.15 + 0.4 * flight
    a["yaw"] += p.yaw


def _idle_sway(t, p, a):
    phi = 2 * np.pi * 0.35 * p.speed * t + p.phase
    amp = p.amplitude
    a["pelvis_tilt"] = 0.07 * amp * np.sin(phi)
    a["root_x"] = 0.035 * amp * np.sin(phi)
    a["tilt"] = -0.05 * amp * np.sin(phi)
    for s, sign in (("r", 1.0), ("l", -1.0)):
        a[f"{s}_knee"] = 0.05 + 0.18 * amp * (1 + sign * np.sin(phi)) / 2
        a[f"{s}_hip_flex"] = 0.5 * a[f"{s}_knee"]
        a[f"{s}_sh_abd"] = 0.12 + 0.06 * amp * np.sin(phi + 1.0)
        a[f"{s}_sh_flex"] = 0.1 * np.sin(0.7 * phi + sign)
        a[f"{s}_el_flex"] = 0.2 + 0.15 * (1 + np.sin(1.3 * phi)) / 2
    a["head_roll"] = 0.1 * amp * np.sin(0.6 * phi + 2.0)
    a["head_yaw"] = 0.3 * amp * np.sin(0.4 * phi)
    a["yaw"] += p.yaw + 0.15 * np.sin(0.3 * phi)


_FAMILIES = {"walk": _walk, "wave": _wave, "dance": _dance, "turn": _turn, "jump": _jump, "idle_sway": _idle_sway}


def joint_angles(motion: str, params: MotionParams, t: np.ndarray) -> dict[str, np.ndarray]:
    """Angles (radians) and root offsets (body units) at times `t` (seconds), each (T,)."""
    t = np.asarray(t, np.float64)
    angles = _rest(t)
    _FAMILIES[motion](t, params, angles)
    return {k: np.broadcast_to(v, t.shape).astype(np.float64) for k, v in angles.items()}


# ------------------------------------------------------------------------- kinematics
def _rot_x(a):  # pitch: +y towards +z (leaning forward)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _rot_y(a):  # yaw: +z towards +x (turning to face the image's right)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rot_z(a):  # roll: +y towards +x (tilting to the figure's left)
    c, s, o, z = np.cos(a), np.sin(a), np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, s, z], -1), np.stack([-s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(r: np.ndarray, v) -> np.ndarray:
    return np.einsum("tij,tj->ti", r, np.broadcast_to(np.asarray(v, np.float64), r.shape[:-1]))


def limb_direction(abduction, flexion, side: float) -> np.ndarray:
    """Unit vector of a limb hanging straight down, swung out sideways by `abduction` and
    forwards by `flexion` (radians); (T, 3)."""
    abduction, flexion = np.asarray(abduction), np.asarray(flexion)
    return np.stack([side * np.sin(abduction), -np.cos(abduction) * np.cos(flexion),
                     np.cos(abduction) * np.sin(flexion)], -1)


def forward_kinematics(bones: BoneLengths, angles: dict[str, np.ndarray]) -> Track:
    """Pose the skeleton with `angles` (see `joint_angles`)."""
    n = len(angles["yaw"])
    torso = _rot_y(angles["twist"]) @ _rot_z(angles["tilt"]) @ _rot_x(angles["lean"])
    pelvis = _rot_z(angles["pelvis_tilt"])
    head = torso @ _rot_y(angles["head_yaw"]) @ _rot_z(angles["head_roll"]) @ _rot_x(angles["head_pitch"])
    joints = np.zeros((n, NUM_BODY, 3))
    root = np.zeros((n, 3)) + (0.0, bones.hip_height, 0.0)
    neck = root + _apply(torso, (0.0, bones.torso, 0.0))
    joints[:, JOINT["neck"]] = neck
    hand_tips, toes = np.zeros((n, 2, 3)), np.zeros((n, 2, 3))
    for k, (s, side) in enumerate(SIDES.items()):
        name = "right" if s == "r" else "left"
        shoulder = neck + _apply(torso, (side * bones.shoulder_half, -0.025, 0.0))
        upper = _apply(torso, limb_direction(angles[f"{s}_sh_abd"], angles[f"{s}_sh_flex"], side))
        fore = _apply(torso, limb_direction(angles[f"{s}_sh_abd"] + angles[f"{s}_el_abd"],
                                            angles[f"{s}_sh_flex"] + angles[f"{s}_el_flex"], side))
        elbow = shoulder + bones.upper_arm * upper
        wrist = elbow + bones.forearm * fore
        hand_tips[:, k] = wrist + bones.hand * fore
        hip = root + _apply(pelvis, (side * bones.hip_half, 0.0, 0.0))
        shin_flex = angles[f"{s}_hip_flex"] - angles[f"{s}_knee"]
        knee = hip + bones.thigh * _apply(pelvis, limb_direction(angles[f"{s}_hip_abd"], angles[f"{s}_hip_flex"], side))
        ankle = knee + bones.shin * _apply(pelvis, limb_direction(angles[f"{s}_hip_abd"], shin_flex, side))
        # the foot points forward and a little down, toes dropping when the shin swings back
        toe_angle = 1.3 + 0.7 * np.minimum(shin_flex, 0.0)  # from straight down towards forward
        toes[:, k] = ankle + bones.foot * np.stack([0.0 * toe_angle, -np.cos(toe_angle), np.sin(toe_angle)], -1)
        for part, point in (("shoulder", shoulder), ("elbow", elbow), ("wrist", wrist), ("hip", hip),
                            ("knee", knee), ("ankle", ankle)):
            joints[:, JOINT[f"{name}_{part}"]] = point
    head_center = neck + _apply(head, (0.0, bones.neck, 0.0))
    hx, hy, hz = bones.head_x, bones.head_y, bones.head_z
    # inside the head's outline from every side (the nose tip and the ears sit a little in from
    # the silhouette), so each face point lies on the drawn head
    face = {"nose": (0.0, -0.3 * hy, 0.7 * hz), "right_eye": (-0.38 * hx, 0.08 * hy, 0.62 * hz),
            "left_eye": (0.38 * hx, 0.08 * hy, 0.62 * hz), "right_ear": (-0.65 * hx, 0.0, -0.1 * hz),
            "left_ear": (0.65 * hx, 0.0, -0.1 * hz)}
    for name, offset in face.items():
        joints[:, JOINT[name]] = head_center + _apply(head, offset)

    # the world: turn about the vertical through the pelvis, then stand on the ground
    world = _rot_y(angles["yaw"])
    pivot = root[:, None]
    joints = np.einsum("tij,tkj->tki", world, joints - pivot) + pivot
    hand_tips = np.einsum("tij,tkj->tki", world, hand_tips - pivot) + pivot
    toes = np.einsum("tij,tkj->tki", world, toes - pivot) + pivot
    head_center = _apply(world, head_center - root) + root
    # the lower ankle by a smooth minimum: a hard one would jolt the body when the support foot changes
    ankles = joints[:, [JOINT["right_ankle"], JOINT["left_ankle"]], 1]
    lowest = -np.logaddexp(-_GROUND_SHARPNESS * ankles[:, 0], -_GROUND_SHARPNESS * ankles[:, 1]) / _GROUND_SHARPNESS
    shift = np.stack([angles["root_x"], bones.ankle_height - lowest + angles["lift"], np.zeros(n)], -1)
    joints, hand_tips, toes = joints + shift[:, None], hand_tips + shift[:, None], toes + shift[:, None]
    head_center = head_center + shift

    head_world = world @ head
    visible = np.ones((n, NUM_BODY), bool)
    for name, (normal, threshold) in _FACE_NORMALS.items():
        normal = np.asarray(normal) / np.linalg.norm(normal)
        visible[:, JOINT[name]] = _apply(head_world, normal)[:, 2] > threshold
    return Track(joints=joints, visible=visible, head_center=head_center,
                 head_up=_apply(head_world, (0.0, 1.0, 0.0)), head_forward=_apply(head_world, (0.0, 0.0, 1.0)),
                 body_forward=_apply(world @ torso, (0.0, 0.0, 1.0)), hand_tips=hand_tips, toes=toes)


def motion_track(motion: str, bones: BoneLengths, frames: int, fps: float, params: MotionParams) -> Track:
    """The figure's pose in each of `frames` frames at `fps`."""
    t = np.arange(frames, dtype=np.float64) / float(fps)
    return forward_kinematics(bones, joint_angles(motion, params, t))

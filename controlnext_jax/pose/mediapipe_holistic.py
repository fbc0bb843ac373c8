"""Offline default detector: MediaPipe Holistic, whose models ship inside the wheel.

`mediapipe==0.10.14` carries BlazePose GHUM (`pose_detection.tflite`,
`pose_landmark_full.tflite`), the face mesh and the hand landmark models in its
wheel, so this detector runs on a fresh machine with no download (see README,
"Pose extraction", for why that exact release). Its 33 BlazePose landmarks,
468-point face mesh and 2 x 21 hand points are mapped onto the DWPose layout of
types.Pose. What it lacks against DWPose:

- one person per frame (Holistic tracks a single person); DWPose finds everyone;
- no per-point confidence for face and hands: they get the constants `face_score` /
  `hand_score` when found, and NaN (never drawn) when not;
- the small toes do not exist in BlazePose (NaN, score 0); feet are not drawn anyway;
- the face's 68 points are picked from the 468-point mesh, not predicted in the
  300-W convention, so the jaw line sits slightly differently;
- only model_complexity 1 ("full") ships in the wheel; lite/heavy would be downloads.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import tempfile
import warnings

import numpy as np

from controlnext_jax.errors import UserError
from controlnext_jax.pose.types import FACE, FEET, LEFT_HAND, NUM_KEYPOINTS, RIGHT_HAND, VISIBLE_SCORE, Pose

# OpenPose body index -> BlazePose landmark index (neck is the shoulders' mean).
BLAZEPOSE_FOR_OPENPOSE_BODY = {
    0: 0,    # nose
    2: 12, 3: 14, 4: 16,  # right shoulder, elbow, wrist
    5: 11, 6: 13, 7: 15,  # left shoulder, elbow, wrist
    8: 24, 9: 26, 10: 28,  # right hip, knee, ankle
    11: 23, 12: 25, 13: 27,  # left hip, knee, ankle
    14: 5, 15: 2,  # right eye, left eye
    16: 8, 17: 7,  # right ear, left ear
}
BLAZE_LEFT_SHOULDER, BLAZE_RIGHT_SHOULDER = 11, 12
# COCO-WholeBody feet (l-big-toe, l-small-toe, l-heel, r-big-toe, r-small-toe, r-heel)
# -> BlazePose (foot index = big toe; no small toe).
BLAZEPOSE_FOR_FEET = (31, None, 29, 32, None, 30)

# The 68 points of the 300-W layout picked from MediaPipe's 468-point face mesh:
# jaw 17, brows 5 + 5, nose bridge 4, nostrils 5, eyes 6 + 6, outer lips 12, inner 8
# (the subject's right side first, as in 300-W).
FACE_MESH_FOR_300W = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    71, 63, 105, 66, 107, 336, 296, 334, 293, 301,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)


# What MediaPipe's native code prints on every run, bypassing Python: TF Lite's delegate
# notice and absl/glog INFO and WARNING lines ("W0000 00:00:... inference_feedback_manager.cc:114]
# Feedback manager requires ..."). The wheel's absl logging reads no environment variable
# (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL change nothing), so these lines are filtered.
NATIVE_LOG_NOISE = re.compile(
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ [\w.-]+:\d+\] .*")


@contextlib.contextmanager
def native_log_filter():
    """Run MediaPipe with the process's stderr (fd 2) captured; afterwards every captured
    line that is not `NATIVE_LOG_NOISE` (errors included) is written to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                capture.seek(0)
                kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                        if not NATIVE_LOG_NOISE.fullmatch(line.rstrip("\r\n"))]
                if kept:
                    os.write(2, "".join(kept).encode())
    finally:
        os.close(saved)


def _xy(landmarks) -> np.ndarray:
    return np.array([(p.x, p.y) for p in landmarks.landmark], dtype=np.float64)


def holistic_to_pose(result, face_score: float = 1.0, hand_score: float = 1.0) -> Pose:
    """A mediapipe Holistic result -> Pose (0 people when no body was found)."""
    if result.pose_landmarks is None:
        return Pose.empty()
    kp = np.full((1, NUM_KEYPOINTS, 2), np.nan)
    sc = np.zeros((1, NUM_KEYPOINTS))

    body = _xy(result.pose_landmarks)
    vis = np.array([p.visibility for p in result.pose_landmarks.landmark], dtype=np.float64)
    for op, bp in BLAZEPOSE_FOR_OPENPOSE_BODY.items():
        kp[0, op], sc[0, op] = body[bp], vis[bp]
    # Neck as DWPose makes it: shoulders' mean, score 1 only if both are visible.
    kp[0, 1] = body[[BLAZE_LEFT_SHOULDER, BLAZE_RIGHT_SHOULDER]].mean(axis=0)
    sc[0, 1] = float(vis[BLAZE_LEFT_SHOULDER] > VISIBLE_SCORE
                     and vis[BLAZE_RIGHT_SHOULDER] > VISIBLE_SCORE)
    for i, bp in enumerate(BLAZEPOSE_FOR_FEET):
        if bp is not None:
            kp[0, FEET.start + i], sc[0, FEET.start + i] = body[bp], vis[bp]

    if result.face_landmarks is not None:
        kp[0, FACE] = _xy(result.face_landmarks)[list(FACE_MESH_FOR_300W)]
        sc[0, FACE] = face_score
    # Holistic's left/right hands are the subject's (cropped from the pose's wrists),
    # as COCO-WholeBody's are.
    for part, hand in ((LEFT_HAND, result.left_hand_landmarks),
                       (RIGHT_HAND, result.right_hand_landmarks)):
        if hand is not None:
            kp[0, part] = _xy(hand)
            sc[0, part] = hand_score
    return Pose(kp, sc)


class MediaPipeHolisticDetector:
    """detect(frame) -> Pose with MediaPipe Holistic (CPU, bundled weights).

    tracking=False treats every frame as a still image (like DWPose, each frame on
    its own); tracking=True lets MediaPipe carry the person from frame to frame,
    which is faster on video; call reset() between videos.
    """

    def __init__(self, min_detection_confidence: float = 0.5, tracking: bool = False,
                 face_score: float = 1.0, hand_score: float = 1.0):
        for name, v in (("pose.min_detection_confidence", min_detection_confidence),
                        ("pose.face_score", face_score), ("pose.hand_score", hand_score)):
            if not 0.0 <= float(v) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {v}")
        self.min_detection_confidence = float(min_detection_confidence)
        self.tracking = bool(tracking)
        self.face_score = float(face_score)
        self.hand_score = float(hand_score)
        self._holistic = None

    def _session(self):
        if self._holistic is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # protobuf 4 deprecation chatter
                from mediapipe.python.solutions import holistic

                self._holistic = holistic.Holistic(
                    static_image_mode=not self.tracking,
                    model_complexity=1,  # the only pose landmark model in the wheel
                    smooth_landmarks=self.tracking,
                    min_detection_confidence=self.min_detection_confidence,
                )
            # A MediaPipe graph still open at interpreter exit hangs the process in its
            # teardown, so make sure it is closed before that.
            atexit.register(self.reset)
        return self._holistic

    def reset(self) -> None:
        """Close the MediaPipe graph (a new one opens on the next detect)."""
        if self._holistic is not None:
            atexit.unregister(self.reset)
            with native_log_filter():
                self._holistic.close()
            self._holistic = None

    def detect(self, frame: np.ndarray) -> Pose:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        # graph start and first frame under one filter: the graph's threads log while starting
        with warnings.catch_warnings(), native_log_filter():
            warnings.simplefilter("ignore")
            result = self._session().process(np.ascontiguousarray(frame))
        return holistic_to_pose(result, self.face_score, self.hand_score)

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> "MediaPipeHolisticDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.reset()

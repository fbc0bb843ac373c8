"""Pose extraction, alignment and rendering for ControlNeXt-SVD.

detect(frame) -> Pose with either detector (`dwpose.DWPoseDetector`, the release's
ONNX pair, or `mediapipe_holistic.MediaPipeHolisticDetector`, the offline default),
align to the reference (`align`, `retarget`), draw as in training (`render`), and the
whole video pipeline (`video`).
"""

from controlnext_jax.pose.align import ReferencePoseError, Rescale, fit_rescale
from controlnext_jax.pose.render import draw_pose
from controlnext_jax.pose.retarget import retarget
from controlnext_jax.pose.types import Pose
from controlnext_jax.pose.video import PoseSequence, extract_pose_sequence, prepare_reference

__all__ = ["Pose", "draw_pose", "fit_rescale", "Rescale", "ReferencePoseError", "retarget",
           "PoseSequence", "extract_pose_sequence", "prepare_reference"]

"""A procedural data set of human-like articulated figures for training and evaluating a small
demo model (docs/synthetic_data.md).

An identity (`identity.make_identity`) is a body and its clothes drawn from an integer id; a
motion (`motion.motion_track`) moves its OpenPose-18 skeleton; `render` draws the figure as
shaded shapes over a background with a slowly moving camera; `dataset.make_clip` puts them
together with the pose video drawn by the project's pose renderer, and `dataset.write_dataset`
writes the `pairs` layout that `controlnext-train data=pairs` reads.
"""

from controlnext_jax.synthetic.dataset import SPLITS, Clip, make_clip, write_dataset
from controlnext_jax.synthetic.identity import Identity, make_identity
from controlnext_jax.synthetic.motion import MOTIONS

__all__ = ["SPLITS", "Clip", "Identity", "MOTIONS", "make_clip", "make_identity", "write_dataset"]

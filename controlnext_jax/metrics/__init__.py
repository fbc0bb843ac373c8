"""Evaluation metrics: FVD with I3D, frame metrics, pose accuracy, window seams.

Each metric is a small pure function over arrays; `report.py` assembles them and
`controlnext_jax.commands.evaluate` is the command-line job (`controlnext-eval`).
"""

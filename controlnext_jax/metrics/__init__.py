"""Evaluation metrics (issue 5): FVD with I3D, frame metrics, pose accuracy, window seams.

Each metric is a small pure function over arrays; `report.py` assembles them and
`eval/evaluate.py` is the command-line job.
"""

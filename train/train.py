#!/usr/bin/env python3
"""Runnable without installing the console scripts: `python train/train.py key=value ...` = `controlnext-train key=value ...`.

The code lives in `controlnext_jax.commands.train` (so a wheel install has it too).
"""

from controlnext_jax.commands.train import main

if __name__ == "__main__":
    main()

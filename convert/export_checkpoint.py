#!/usr/bin/env python3
"""Runnable without installing the console scripts: `python convert/export_checkpoint.py key=value ...` = `controlnext-export key=value ...`.

The code lives in `controlnext_jax.commands.export` (so a wheel install has it too).
"""

from controlnext_jax.commands.export import main

if __name__ == "__main__":
    main()

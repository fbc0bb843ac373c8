#!/usr/bin/env python3
"""Runnable without installing the console scripts: `python convert/convert_checkpoint.py key=value ...` = `controlnext-convert key=value ...`.

The code lives in `controlnext_jax.commands.convert` (so a wheel install has it too).
"""

from controlnext_jax.commands.convert import main

if __name__ == "__main__":
    main()

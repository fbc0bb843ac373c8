#!/usr/bin/env python3
"""Runnable without installing the console scripts: `python eval/evaluate.py key=value ...` = `controlnext-eval key=value ...`.

The code lives in `controlnext_jax.commands.evaluate` (so a wheel install has it too).
"""

from controlnext_jax.commands.evaluate import main

if __name__ == "__main__":
    main()

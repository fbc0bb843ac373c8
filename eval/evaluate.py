"""`controlnext-eval`: the Hydra entry point over `controlnext_jax.metrics.benchmark`."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from controlnext_jax.metrics import benchmark

# Absolute: Hydra resolves a relative config_path against the entry point's package, which
# fails for the top-level `eval` package once installed (this is `../configs`).
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
# The user's input is wrong (paths, ranges, generate=true without a pipeline): one clear line.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotImplementedError)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    command = " ".join(["controlnext-eval", *HydraConfig.get().overrides.task])
    try:
        out = benchmark.run(cfg, command=command)
    except USER_ERRORS as e:
        print(f"controlnext-eval: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"report written to {out}/report.md")


if __name__ == "__main__":
    main()

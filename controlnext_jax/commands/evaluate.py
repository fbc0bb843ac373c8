"""`controlnext-eval`: the Hydra entry point over `controlnext_jax.metrics.benchmark`."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from controlnext_jax.cli import CONFIG_DIR, user_errors
from controlnext_jax.metrics import benchmark


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@user_errors("controlnext-eval")
def main(cfg: DictConfig) -> None:
    command = " ".join(["controlnext-eval", *HydraConfig.get().overrides.task])
    out = benchmark.run(cfg, command=command)
    print(f"report written to {out}/report.md")


if __name__ == "__main__":
    main()

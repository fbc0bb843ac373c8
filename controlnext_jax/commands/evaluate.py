"""controlnext-eval: evaluate generated videos against a test set (`controlnext_jax.metrics.evaluation`)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from controlnext_jax.cli import run_command


def evaluate(cfg: DictConfig, argv: list[str]) -> None:
    from controlnext_jax.metrics import evaluation

    out = evaluation.run(cfg, command=" ".join(["controlnext-eval", *argv]))
    print(f"report written to {out}/report.md")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("controlnext-eval", "eval", lambda cfg: evaluate(cfg, argv), argv)


if __name__ == "__main__":
    main()

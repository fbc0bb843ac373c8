"""controlnext-eval: evaluate generated videos against a benchmark set (`controlnext_jax.metrics`)."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from controlnext_jax.cli import run_command


def evaluate(cfg: DictConfig, argv: list[str]) -> None:
    from controlnext_jax.metrics import benchmark

    out = benchmark.run(cfg, command=" ".join(["controlnext-eval", *argv]))
    print(f"report written to {out}/report.md")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_command("controlnext-eval", "eval", lambda cfg: evaluate(cfg, argv), argv)


if __name__ == "__main__":
    main()

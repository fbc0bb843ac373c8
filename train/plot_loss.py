"""Plot training runs' loss curves into one PNG (controlnext_jax/training/loss_curve.py).

    python train/plot_loss.py OUT.png "VAE (L1 + KL)=runs/embedded_vae:l1" "UNet + ControlNeXt=runs/embedded_unet"

Each panel is TITLE=RUN_FOLDER[:METRIC] (METRIC defaults to loss).
"""

import sys

from controlnext_jax.training.loss_curve import plot_loss_curves


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    panels = []
    for spec in argv[1:]:
        title, _, where = spec.partition("=")
        run, _, key = where.partition(":")
        panels.append((title, run, key or "loss"))
    print(plot_loss_curves(panels, argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The optimizer of the release, with its choices as explicit options (docs/release_semantics.md, Training).

AdamW (lr 1e-5, betas 0.9 / 0.999, weight decay 1e-2 on every trainable parameter,
eps 1e-8), global-norm clipping at 1.0 (DeepSpeed's gradient_clipping; the in-code clip
is commented out), applied to the gradient accumulated over `accumulation_steps`
micro-batches (optax.MultiSteps averages them, as DeepSpeed does). The release configured
a 500-step warmup for the "constant" schedule, which ignores warmup: the learning rate was
constant from step 0, hence warmup_steps=0 and schedule="constant" by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import optax

SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class OptimizerConfig:
    learning_rate: float = 1e-5
    b1: float = 0.9
    b2: float = 0.999
    weight_decay: float = 1e-2
    eps: float = 1e-8
    schedule: str = "constant"  # constant | linear (to 0) | cosine (to 0), after the warmup
    warmup_steps: int = 0  # linear from 0 to learning_rate, in optimizer updates
    total_steps: int | None = None  # needed by linear / cosine: updates from 0 to the end of the decay
    clip_norm: float | None = 1.0
    accumulation_steps: int = 1

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; allowed: {list(SCHEDULES)}")
        if self.schedule != "constant" and (self.total_steps is None or self.total_steps <= self.warmup_steps):
            raise ValueError(f"schedule={self.schedule!r} needs total_steps above warmup_steps={self.warmup_steps}")
        if self.accumulation_steps < 1 or self.warmup_steps < 0:
            raise ValueError("accumulation_steps must be >= 1 and warmup_steps >= 0")


def learning_rate_schedule(cfg: OptimizerConfig) -> optax.Schedule:
    """Learning rate per optimizer update (micro-batches of an accumulation count once)."""
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.learning_rate)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.learning_rate, 0.0, cfg.total_steps - cfg.warmup_steps)
    else:
        after = optax.cosine_decay_schedule(cfg.learning_rate, cfg.total_steps - cfg.warmup_steps)
    if cfg.warmup_steps == 0:
        return after
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, cfg.warmup_steps)
    return optax.join_schedules([warmup, after], [cfg.warmup_steps])


def make_optimizer(cfg: OptimizerConfig) -> optax.MultiSteps:
    """clip -> AdamW under the schedule, every `accumulation_steps` micro-batches."""
    inner = optax.chain(
        optax.clip_by_global_norm(cfg.clip_norm) if cfg.clip_norm else optax.identity(),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay),
    )
    return optax.MultiSteps(inner, every_k_schedule=cfg.accumulation_steps)

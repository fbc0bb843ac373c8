"""Fine-tuning ControlNeXt-SVD: the release's training recipe as a library (docs/release_semantics.md, Training).

The recipe: `sigmas` (noise-level samplers), `dropout` (conditioning dropout), `hand_mask`
(the hand-region loss weight), `draws` (every random draw of a step, explicit), `loss` (the
diffusion loss), `trainable` (which parameters train), `optimizer` (AdamW, schedule,
clipping, accumulation), `ema`, and `step` (the train state and the sharded jitted step).
Around it: `models` (networks built or restored onto the mesh), `data` / `data_sources` /
`data_clip` (the clip loader), `checkpointing` (orbax, resumable), `export` (a converted
checkpoint of the trained weights), and the `controlnext-train` run (`run`, `run_config`,
`run_log`, `validation_video`; docs/training.md).
"""

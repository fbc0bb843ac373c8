"""Fine-tuning ControlNeXt-SVD: the release's training recipe as a library (docs/release_semantics.md, Training).

`sigmas` (noise-level samplers), `dropout` (conditioning dropout), `hand_mask` (the hand-region
loss weight), `draws` (every random draw of a step, explicit), `loss` (the diffusion loss),
`trainable` (which parameters train), `optimizer` (AdamW, schedule, clipping, accumulation)
and `step` (the train state and the jitted step).
"""

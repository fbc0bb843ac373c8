#!/usr/bin/env bash
# The embedded model's two training stages on a borrowed GPU, in one device call
# (docs/embedded_model.md, "Stage 2 on a GPU"):
#   bash train/gpu_embedded.sh RESULTS_DIR
# On the lent machine (16 cores, one GPU, no network, no ffmpeg, at most 10 minutes a call, at most
# 64 MiB carried in, the tracked tree included): installs the wheels in ./wheels
# (benchmarks/gpu_wheels.sh: hydra-core, omegaconf, antlr4, grain and the three it needs that the
# machine lacks), renders the synthetic training split there as frame arrays (no ffmpeg to write or
# read them) in parallel shards, trains stage 1 (the VAE, 8 latent channels) and stage 2 (UNet,
# ControlNeXt module and CLIP tower, figure-weighted) each under a time limit, and leaves in
# RESULTS_DIR: both runs' metrics.jsonl and config.yaml, loss.png, the log, and stage 2's export
# as model.tar cut into 15 MiB pieces (model.tar.part-aa, -ab, ...: `cat model.tar.part-* | tar x`).
# Everything is set by the variables below; CI runs it at toy size on the CPU
# (tests/test_gpu_embedded.py). The learning rates are constant: a cosine needs the number of
# steps, which a time limit does not know in advance.
set -euo pipefail
results=${1:?usage: gpu_embedded.sh RESULTS_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
wheels=${WHEELS:-$here/wheels}
work=${WORK:-$(mktemp -d)}
shards=${SHARDS:-16}                 # controlnext-synth processes (one per core)
clips=${CLIPS:-1600}                 # training clips in all
frames=${FRAMES:-48}
height=${HEIGHT:-128}
width=${WIDTH:-96}
vae_s=${VAE_S:-130}                  # stage 1's time limit (s), compilation included
unet_s=${UNET_S:-240}                # stage 2's
vae_steps=${VAE_STEPS:-100000}       # step caps (the time limits end the full-size runs first)
unet_steps=${UNET_STEPS:-100000}
vae_batch=${VAE_BATCH:-32}           # clips per step: stage 1 reconstructs 2 frames of each
unet_batch=${UNET_BATCH:-16}
vae_crop=${VAE_CROP:-[64,64]}
workers=${WORKERS:-12}               # loader processes
dtype=${DTYPE:-bfloat16}
read -ra stage2_overrides <<< "${STAGE2_OVERRIDES:-}"  # more controlnext-train overrides for stage 2, e.g.
                                                       # STAGE2_OVERRIDES="control_scale=5.0 data.figure_weight=2.0"
mkdir -p "$results" "$work"
exec > >(tee "$results/gpu_embedded.log") 2>&1
started=$(date +%s)
stamp() { echo "[gpu_embedded] $(( $(date +%s) - started )) s: $*"; }

if compgen -G "$wheels/*.whl" > /dev/null; then
  "$python" -m pip install --quiet --no-deps --no-index "$wheels"/*.whl
else
  stamp "no wheels in $wheels: using what is installed"
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"

stamp "rendering $clips clips in $shards shards"
per=$(( (clips + shards - 1) / shards ))
pids=()
for k in $(seq 0 $((shards - 1))); do
  "$python" -m controlnext_jax.commands.synth out="$work/shard$k" num_clips=$per frames=$frames height=$height \
    width=$width seed=$k video_format=npy > "$work/shard$k.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done  # not a bare `wait`: it would wait for the tee above too
data="$work/train"
mkdir -p "$data/videos" "$data/poses" "$data/masks"
for k in $(seq 0 $((shards - 1))); do  # shard k's clip i: s<k>_ keeps the names apart
  for sub in videos poses masks; do
    for f in "$work/shard$k/$sub"/*; do ln -s "$f" "$data/$sub/s${k}_$(basename "$f")"; done
  done
done
stamp "$(ls "$data/videos" | wc -l) clips in $data"

common=(data.root="$data" data.height=$height data.width=$width data.workers=$workers compute_dtype=$dtype
        log.progress=false log.wandb=disabled log.every=25 optimizer.schedule=constant checkpoint.every=1000000
        checkpoint.async_save=false)
stamp "stage 1: the VAE for at most $vae_s s"
"$python" -m controlnext_jax.commands.train +experiment=embedded_vae out="$work/vae" "${common[@]}" \
  model.vae.latent_channels=8 model.unet.in_channels=16 model.unet.out_channels=8 \
  data.batch_size=$vae_batch vae_crop="$vae_crop" steps=$vae_steps time_limit_s=$vae_s optimizer.total_steps=null
stamp "stage 2: UNet, ControlNeXt module and CLIP tower for at most $unet_s s"
"$python" -m controlnext_jax.commands.train +experiment=embedded_unet ckpt="$work/vae/model" out="$work/unet" \
  "${common[@]}" data.batch_size=$unet_batch data.figure_weight=4.0 validation.every=0 \
  steps=$unet_steps time_limit_s=$unet_s optimizer.total_steps=null "${stage2_overrides[@]}"

for stage in vae unet; do
  mkdir -p "$results/$stage"
  cp "$work/$stage/metrics.jsonl" "$work/$stage/config.yaml" "$results/$stage/"
done
"$python" train/plot_loss.py "$results/loss.png" "VAE (L1 + KL)=$work/vae:l1" "UNet + ControlNeXt=$work/unet"
tar -C "$work/unet" -cf "$work/model.tar" model
split -b 15M "$work/model.tar" "$results/model.tar.part-"
stamp "done: $(ls "$results")"

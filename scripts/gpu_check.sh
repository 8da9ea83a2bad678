#!/usr/bin/env bash
# One GPU: a GPT-2-small-sized model with bf16, torch.compile and FSDP2, 100 steps on
# the standard-library text; prints the steady tokens/s and MFU (perf/* scalars).
#   bash scripts/gpu_check.sh [extra Hydra overrides]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
run_dir=outputs/runs/gpu-check-$(date +%Y-%m-%d_%H-%M-%S)
"$python" -m scaletrain.train experiment=gpt_text trainer=gpu trainer.devices=1 \
  strategy=fsdp trainer.precision=bf16-mixed model.compile=true \
  model.net.dim=768 model.net.num_layers=12 model.net.num_heads=12 \
  data.context_length=1024 data.batch_size=16 \
  trainer.limit_train_batches=100 trainer.log_every_n_steps=10 trainer.limit_val_batches=5 \
  test=false callbacks.rich_progress_bar=null hydra.run.dir="$run_dir" "$@"
"$python" - "$run_dir" <<'PY'
import statistics
import sys

from scaletrain.benchmark import perf_scalars

perf = perf_scalars(sys.argv[1])
for tag in ("perf/tokens_per_sec", "perf/mfu", "perf/step_time_sec", "perf/peak_memory_bytes/rank0"):
    if tag in perf:
        steady = perf[tag][1:] or perf[tag]  # without the first window (compilation)
        print(f"{tag}: {statistics.median(steady):.4g}")
PY

#!/usr/bin/env bash
# The device checks of one GPU machine, in one go (the stages' time limits sum to 570 s, inside
# one 600-second device command): the device rule on a real GPU, a short MBPO run on the GPU
# with CUDA graphs on, eager against graphed and compiled steps, seed groups, the hot-path
# timings (benchmarks/hot_paths.py) and bf16 rates on the GPU. Python packages the machine lacks
# come as wheels in .whl/ (gymnasium, mujoco); the package runs from the source tree
# (PYTHONPATH). Optional: an older source tree in .before/ for a before/after pair. Writes its
# JSON and logs to $OUT (default benchmarks/results/gpu); compiled.py and seed_groups.py rewrite
# their JSON after every figure, so a stage cut short by its limit keeps what it measured.
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MUJOCO_GL=egl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/device_rule.txt"
import torch
from mbpo_ray.devices import resolve_device
from mbpo_ray.errors import ConfigError
print("torch", torch.__version__, "cuda devices", torch.cuda.device_count())
for spec, ids in (("auto", None), ("cuda", None), ("cuda:0", None), ("auto", [0]), ("cuda", [0]), ("auto", [])):
    print(f"resolve_device({spec!r}, gpu_ids={ids}) ->", resolve_device(spec, gpu_ids=ids))
for spec in ("cuda:%d" % torch.cuda.device_count(), "mps"):
    try:
        resolve_device(spec)
        print(spec, "-> accepted (WRONG)")
    except ConfigError as e:
        print(spec, "-> ConfigError:", e)
PY
timeout 75 python3 -m mbpo_ray.cli train --env InvertedPendulum-v5 --steps 1000 --device cuda --out /tmp/gpu_run \
  --set eval_episodes=2 --set sac.cuda_graph=true --set model.cuda_graph=true --no-progress 2>&1 | tail -3 | tee "$OUT/train_cuda.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/train_cuda.txt"
import torch
state = torch.load("/tmp/gpu_run/checkpoint.pt", map_location="cpu", weights_only=False)
print("checkpoint env_steps", state["env_steps"])
PY
# Most telling first, each stage under a time limit so that one slow stage leaves the others their
# figures. Eager, graphed (sac.cuda_graph, model.cuda_graph) and compiled: the SAC update and a fit epoch
timeout 120 python3 benchmarks/compiled.py --device cuda --threads 4 --out "$OUT/compiled_cuda.json" 2>&1 | tee "$OUT/compiled_cuda.log" | tail -6
# seed groups (docs/seed_groups.md): the stacked SAC update, the stacked fit and the whole loop (Hopper
# preset, warm-up cut to 1,000 random steps, 1,000 learning steps) for 1, 4 and 8 seeds per process,
# graphed, then eager
timeout 150 python3 benchmarks/seed_groups.py --device cuda --threads 4 --warmup 1000 --steps 1000 --graphed \
  --out "$OUT/seed_groups_cuda_graphed.json" 2>&1 | tee "$OUT/seed_groups_cuda_graphed.log" | tail -8
timeout 120 python3 benchmarks/seed_groups.py --device cuda --threads 4 --warmup 1000 --steps 1000 \
  --out "$OUT/seed_groups_cuda.json" 2>&1 | tee "$OUT/seed_groups_cuda.log" | tail -8
timeout 45 python3 benchmarks/hot_paths.py --label after --device cuda --threads 4 --out "$OUT/hot_paths_after.json" 2>&1 | tee "$OUT/hot_paths_after.log" | tail -27
if [ -d .before ]; then
  PYTHONPATH=$PWD/.before:${PYTHONPATH#$PWD:} timeout 45 python3 benchmarks/hot_paths.py --label before --device cuda \
    --threads 4 --out "$OUT/hot_paths_before.json" 2>&1 | tee "$OUT/hot_paths_before.log" | tail -25
fi
# float32 against bf16 on the GPU: matmul rates, the SAC update and its matmul floor (docs/precision.md)
timeout 30 python3 benchmarks/precision.py --device cuda --out "$OUT/precision_cuda.json" 2>&1 | tee "$OUT/precision_cuda.log" | tail -3

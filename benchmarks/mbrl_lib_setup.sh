#!/usr/bin/env bash
# Installs mbrl-lib 0.2.0 (the PyTorch MBPO most users would pick instead of ours) into its own
# virtual environment under DIR, for benchmarks/mbrl_lib_loop.py. Never into the project's venv.
#
#   bash benchmarks/mbrl_lib_setup.sh DIR      # then: DIR/venv/bin/python, config in DIR/conf
#
# mbrl-lib 0.2.0 pins gymnasium 0.26 and MuJoCo 2.2, which have no Python 3.11 wheels; it runs on
# the project's gymnasium, MuJoCo and torch when installed without its pins and with three changes
# to a copy of its Hydra config (below). Its code is not changed.
set -euo pipefail
DIR=${1:?usage: bash benchmarks/mbrl_lib_setup.sh DIR}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
pin() { sed -n "s/^$1==//p" "$ROOT/constraints.txt" "$ROOT/constraints-cpu.txt" | head -n1; }
TORCH=$(pin torch); GYM=$(pin gymnasium); MUJOCO=$(pin mujoco)
mkdir -p "$DIR"
python3 -m venv "$DIR/venv"
"$DIR/venv/bin/pip" install --quiet "torch==$TORCH" "gymnasium[mujoco]==$GYM" "mujoco==$MUJOCO" "numpy<2" omegaconf hydra-core \
    termcolor tqdm matplotlib imageio tensorboard
"$DIR/venv/bin/pip" install --quiet --no-deps mbrl==0.2.0
SITE=$("$DIR/venv/bin/python" -c 'import mbrl, os; print(os.path.dirname(mbrl.__file__))')
rm -rf "$DIR/conf" && cp -r "$SITE/examples/conf" "$DIR/conf"
# 1. Its main config names a CEM action optimiser whose file the wheel does not ship (MBPO never
#    uses it): an empty group file satisfies Hydra.
mkdir -p "$DIR/conf/action_optimizer"
echo "# @package _group_" > "$DIR/conf/action_optimizer/cem.yaml"
# 2. The MBPO config builds the action space with gym.env.Box (the old gym package): point it at
#    make_box, which benchmarks/mbrl_lib_run.py defines with gymnasium.
sed -i 's/_target_: gym.env.Box/_target_: __main__.make_box/' "$DIR/conf/algorithm/mbpo.yaml"
# 3. The ensemble's config must not be instantiated recursively by newer Hydra (mbrl-lib builds its
#    members itself).
echo "_recursive_: false" >> "$DIR/conf/dynamics_model/gaussian_mlp_ensemble.yaml"
echo "mbrl-lib 0.2.0 in $DIR/venv, its config in $DIR/conf"

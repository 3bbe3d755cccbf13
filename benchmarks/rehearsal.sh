#!/usr/bin/env bash
# Rehearse every shipped cluster file with local and with s3 storage (docs/clusters.md, "Before your
# first `ray up`"), one after another, and keep each rehearsal's record (its steps and their times,
# the date, the CPU model) in benchmarks/results/rehearsal/<file>-<storage>.json and its output
# beside it (.txt). Needs ports 6379 and 8265 free (no other Ray on the machine).
#   bash benchmarks/rehearsal.sh                     # all files, both storages (~15 min on 2 cores)
#   bash benchmarks/rehearsal.sh cluster/aws.yaml    # one file
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=benchmarks/results/rehearsal
mkdir -p "$OUT"
files=("$@")
[ ${#files[@]} -eq 0 ] && files=(cluster/aws.yaml cluster/gcp.yaml cluster/onprem.yaml cluster/kuberay/raycluster.yaml cluster/kuberay/rayjob.yaml)
failed=0
for file in "${files[@]}"; do
  for storage in local s3; do
    name="$(basename "$file" .yaml)-$storage"
    work=$(mktemp -d)
    echo "== $file ($storage)"
    "$BIN/mbpo-ray" cluster rehearse "$file" --storage "$storage" --out "$work/r" --record "$OUT/$name.json" \
      > "$OUT/$name.txt" 2>&1 || failed=1
    grep -E "^  (ok|FAIL) |^rehearsal of|^mbpo-ray: error" "$OUT/$name.txt"
    rm -rf "$work"
  done
done
exit $failed

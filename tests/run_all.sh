#!/usr/bin/env bash
# `make test`: the whole suite as three pytest processes side by side, so that a 2-core machine is
# busy while Ray starts actors and waits on them. The Ray tests (marker `ray`) are split over the
# three so that each finishes at about the same time (each part's `--durations` report shows where
# its time goes):
#   - the tests that start Ray, Tune or RLlib on Ray's fixed port 6379 (test_multinode's
#     cluster_utils, the rehearsal's fake autoscaler), one after another, after test_any_env's
#     Ray test and the killed-driver test (their own local instances, shut down before the
#     others start);
#   - the other tests that start Ray (each module its own local instance);
#   - all the others, which report as they run, then the resume matrix's Ray cases; the Ray
#     parts' reports follow.
# The exit status is the first failing part's (0 when all pass). Arguments go to every part.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# Three parts on two cores: a torch thread that waits for work sleeps instead of spinning, so that
# it does not take the core from another part's process (OpenMP's default spins first).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
KILLED_DRIVER=tests/test_ray_runtime.py::test_killed_driver_resumes_from_its_checkpoint
FIXED_PORT=(tests/test_any_env.py "$KILLED_DRIVER" tests/test_multinode.py tests/test_rehearsal.py)
AFTER_OTHERS=(tests/test_resume_matrix.py)
fixed_log=$(mktemp)
ray_log=$(mktemp)
"$PY" -m pytest -q -m ray --durations=5 "$@" "${FIXED_PORT[@]}" >"$fixed_log" 2>&1 &
fixed_pid=$!
"$PY" -m pytest -q -m ray --durations=5 --ignore=tests/test_any_env.py --ignore=tests/test_multinode.py \
    --ignore=tests/test_rehearsal.py --deselect="$KILLED_DRIVER" "${AFTER_OTHERS[@]/#/--ignore=}" "$@" tests \
    >"$ray_log" 2>&1 &
ray_pid=$!
trap 'kill "$fixed_pid" "$ray_pid" 2>/dev/null; rm -f "$fixed_log" "$ray_log"; exit 130' INT TERM
"$PY" -m pytest -q -m "not ray" --durations=10 "$@" tests
others=$?
echo
echo "=== the resume matrix's Ray cases (pytest -m ray ${AFTER_OTHERS[*]}) ==="
"$PY" -m pytest -q -m ray --durations=5 "$@" "${AFTER_OTHERS[@]}"
after=$?
wait "$ray_pid"
ray=$?
wait "$fixed_pid"
fixed=$?
echo
echo "=== the other tests that start Ray (pytest -m ray) ==="
cat "$ray_log"
echo
echo "=== two Ray tests, then the tests on port 6379 (pytest -m ray ${FIXED_PORT[*]}) ==="
cat "$fixed_log"
rm -f "$fixed_log" "$ray_log"
status=0
for part in "$others" "$after" "$ray" "$fixed"; do
    # pytest's 5: no test selected (arguments that select none of this part)
    if [ "$part" -ne 0 ] && [ "$part" -ne 5 ] && [ "$status" -eq 0 ]; then
        status=$part
    fi
done
exit "$status"

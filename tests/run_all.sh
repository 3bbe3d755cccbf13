#!/usr/bin/env bash
# `make test`: the whole suite as two pytest processes side by side, so that a 2-core machine is
# busy while Ray starts actors and waits on them: the tests that start Ray, Tune or RLlib (marker
# `ray`; one Ray instance at a time, as several of them use Ray's fixed port 6379) and all the
# others. The others report as they run; the Ray tests' report follows. The exit status is the
# first failing part's (0 when both pass). Arguments go to both pytest commands.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
log=$(mktemp)
"$PY" -m pytest -q -m ray --durations=10 "$@" tests >"$log" 2>&1 &
ray_pid=$!
trap 'kill "$ray_pid" 2>/dev/null; rm -f "$log"; exit 130' INT TERM
"$PY" -m pytest -q -m "not ray" --durations=10 "$@" tests
others=$?
wait "$ray_pid"
ray=$?
echo
echo "=== tests that start Ray (pytest -m ray) ==="
cat "$log"
rm -f "$log"
# pytest's 5: no test selected (arguments that select none of one part)
[ "$others" -eq 5 ] && others=0
[ "$ray" -eq 5 ] && ray=0
[ "$others" -ne 0 ] && exit "$others"
exit "$ray"

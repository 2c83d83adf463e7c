#!/usr/bin/env bash
# Ray scaling on a machine without a package registry (the 16-core device machine):
# installs Ray and the project's other missing dependencies from .whl/, then runs a benchmark.
#
#   bash benchmarks/device_scale.sh cli OUTDIR       # whole runs, shard-built economies:
#        strong scaling at 10^7 agents (inproc on all cores and on 1 thread, Ray K x 1 for
#        K = 1,2,4,8,16, Ray 1 x C), benchmarks/cli_scale.py, within BUDGET_S (default 420)
#   bash benchmarks/device_scale.sh cli-weak OUTDIR  # 2.5e6 agents per worker, K = 1,2,4,8
#   bash benchmarks/device_scale.sh largest OUTDIR   # the in-process engine at 2e7, 5e7, 1e8
#   bash benchmarks/device_scale.sh strong OUTDIR    # kernel rates, driver-built, 10^6 agents
#   bash benchmarks/device_scale.sh weak OUTDIR      # the same, 2.5e5 agents per worker
#
# One device call runs one mode (a call may last 10 minutes; the device's whole loan is 15):
# the cli modes write their results after every configuration and stop starting new ones
# after BUDGET_S seconds, so a slot that ends early still returns what was measured.
#
# .whl/ (ignored by git) holds Ray 2.60.0 repacked without the parts a local runtime does
# not load and stripped, and the wheels of the dependencies the machine lacks; make it
# with `bash benchmarks/device_wheels.sh`.
#
# (17 MB; checked to start a local Ray and run tasks and actors on the 2-core machine.)
# numpy, numba, scipy, networkx, pyarrow, pandas, tqdm, filelock, matplotlib and
# typing-extensions are the machine's own (their versions are recorded in the results).
#
# Sizes and rounds can be overridden for a smoke test: N, PER_WORKER, SIZES, ROUNDS,
# REPEATS, WORKERS, STORE_MIB, BUDGET_S. On the device, from the checkout (.whl/ is ignored
# by git, so it travels as a carried path; with the tracked tree it is about 27 MB):
#
#   run(command="bash benchmarks/device_scale.sh cli $OUT", carry=[".whl"], timeout_s=540)
set -euo pipefail
mode=${1:?cli, cli-weak, largest, strong or weak}
out=${2:?output folder}
py=${PYTHON:-python3}
site=${SITE:-/tmp/site}
if [ ! -d "$site/ray" ]; then
    mkdir -p "$site"
    tar -xJf .whl/ray-*-stripped.tar.xz -C "$site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
fi
# The checkout is the package: a folder holding a link named tatonnet puts it on the path.
mkdir -p /tmp/tatonnet-path && ln -sfn "$PWD" /tmp/tatonnet-path/tatonnet
export PYTHONPATH="$site:/tmp/tatonnet-path" PYTHONUNBUFFERED=1
"$py" -c "import ray, mesa, numba, numpy, scipy, networkx, pyarrow, os; print('ray', ray.__version__, 'mesa', mesa.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'cores', len(os.sched_getaffinity(0)))"
mkdir -p "$out"
common=(--rounds "${ROUNDS:-50}" --repeats "${REPEATS:-3}" --workers "${WORKERS:-1,2,4,8,16}"
        --object-store-mib "${STORE_MIB:-8192}" --code-label "${LABEL:-this checkout}")
budget=${BUDGET_S:-420}
case $mode in
    cli) "$py" benchmarks/cli_scale.py --strong --n "${N:-10000000}" --rounds "${ROUNDS:-20}" \
                --workers "${WORKERS:-1,2,4,8,16}" --budget-s "$budget" --out "$out/cli_scale_strong" ;;
    cli-weak) "$py" benchmarks/cli_scale.py --weak --per-worker "${PER_WORKER:-2500000}" \
                --rounds "${ROUNDS:-20}" --workers "${WORKERS:-1,2,4,8}" --budget-s "$budget" \
                --out "$out/cli_scale_weak" ;;
    largest) "$py" benchmarks/cli_scale.py --largest "${SIZES:-20000000,50000000,100000000}" \
                --budget-s "$budget" --out "$out/cli_scale_largest" ;;
    strong) "$py" benchmarks/ray_scale.py --strong --n "${N:-1000000}" "${common[@]}" \
                --out "$out/ray_scale_strong" ;;
    weak) "$py" benchmarks/ray_scale.py --weak --per-worker "${PER_WORKER:-250000}" "${common[@]}" \
                --out "$out/ray_scale_weak" ;;
    *) echo "device_scale.sh: mode must be cli, cli-weak, largest, strong or weak, got $mode" >&2
       exit 2 ;;
esac

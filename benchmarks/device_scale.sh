#!/usr/bin/env bash
# Strong or weak Ray scaling on a machine without a package registry (the 16-core device
# machine): installs Ray from .whl/, then runs benchmarks/ray_scale.py.
#
#   bash benchmarks/device_scale.sh strong OUTDIR    # 10^6 agents, K = 1,2,4,8,16
#   bash benchmarks/device_scale.sh weak OUTDIR      # 2.5e5 agents per worker, K = 1..16
#
# .whl/ holds Ray 2.60.0's manylinux wheel unpacked and repacked without the parts a local
# runtime does not load (ray/jars, rllib, data, serve, train, tune, llm, the dashboard's web
# client), and the wheels of Ray's dependencies that the machine lacks. Made with:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .whl ray==2.60.0 jsonschema referencing rpds-py \
#       jsonschema-specifications
#   mkdir x && (cd x && unzip -q ../.whl/ray-2.60.0-*.whl && rm -rf ray/jars ray/rllib \
#       ray/data ray/serve ray/train ray/tune ray/llm ray/dashboard/client/build && \
#       tar -cf - . | xz -9 > ../.whl/ray-2.60.0-stripped.tar.xz) && rm .whl/ray-2.60.0-*.whl
#
# numpy, numba, scipy, networkx, pyarrow and typing-extensions are the machine's own (their
# versions are recorded in the results).
#
# Sizes and rounds can be overridden for a smoke test: N, PER_WORKER, ROUNDS, REPEATS,
# WORKERS, STORE_MIB.
set -euo pipefail
mode=${1:?strong or weak}
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
"$py" -c "import ray, numba, numpy, scipy, networkx, pyarrow, os; print('ray', ray.__version__, 'numba', numba.__version__, 'numpy', numpy.__version__, 'cores', len(os.sched_getaffinity(0)))"
mkdir -p "$out"
common=(--rounds "${ROUNDS:-50}" --repeats "${REPEATS:-3}" --workers "${WORKERS:-1,2,4,8,16}"
        --object-store-mib "${STORE_MIB:-8192}" --code-label "${LABEL:-this checkout}")
case $mode in
    strong) "$py" benchmarks/ray_scale.py --strong --n "${N:-1000000}" "${common[@]}" \
                --out "$out/ray_scale_strong" ;;
    weak) "$py" benchmarks/ray_scale.py --weak --per-worker "${PER_WORKER:-250000}" "${common[@]}" \
                --out "$out/ray_scale_weak" ;;
    *) echo "device_scale.sh: mode must be strong or weak, got $mode" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with what benchmarks/device_scale.sh installs on a machine
# without a package registry: Ray 2.60.0 unpacked, without the parts a local runtime does
# not load (ray/jars, rllib, data, serve, train, tune, llm, the dashboard's web client),
# its binaries stripped of symbols, repacked with xz -9 (79 MB wheel -> 17 MB), and the
# wheels of the project's other dependencies that the device machine lacks. Needs pip's
# registry, unzip, strip and xz; about a minute and a half (xz -9 is most of it).
#
#   bash benchmarks/device_wheels.sh            # then: du -sh .whl (about 20 MB)
set -euo pipefail
py=${PYTHON:-.venv/bin/python}
if ls .whl/ray-*-stripped.tar.xz >/dev/null 2>&1; then
    echo "device_wheels.sh: .whl/ already holds a stripped Ray; remove it to rebuild" >&2
    exit 2
fi
mkdir -p .whl
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .whl ray==2.60.0 jsonschema \
    referencing rpds-py jsonschema-specifications mesa==3.5.1 pydantic pydantic-core \
    annotated-types typing-inspection
work=$(mktemp -d /tmp/tatonnet-raystrip.XXXXXX)
trap 'rm -rf "$work"' EXIT
(cd "$work" && unzip -q "$OLDPWD"/.whl/ray-2.60.0-*.whl \
    && rm -rf ray/jars ray/rllib ray/data ray/serve ray/train ray/tune ray/llm \
        ray/dashboard/client/build \
    && find . \( -name '*.so' -o -name raylet -o -name gcs_server \) -type f \
        -exec strip --strip-unneeded {} +)
tar -C "$work" -cf - . | xz -9 > .whl/ray-2.60.0-stripped.tar.xz
rm .whl/ray-2.60.0-*.whl
du -sh .whl

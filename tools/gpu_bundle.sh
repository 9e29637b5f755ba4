#!/usr/bin/env bash
# Build, on a machine with pip, what the GPU machine lacks to run distgraph's Ray paths: it has cupy, torch,
# numpy and most of Ray's needs (click, msgpack, protobuf, pyyaml, requests, aiohttp's family), but no Ray and
# no jsonschema, and nothing can be fetched there. Ray's wheel (79 MB) is too big to carry whole (64 MiB a
# call): unzipped without what distgraph never loads (the Java jars, the dashboard's web client, RLlib, Data,
# Serve, Tune, Train) it packs with xz to ~28 MB.
#
#   bash tools/gpu_bundle.sh [PYTHON_VERSION]     # 3.12 (the GPU image's python3) by default
#
# Writes .device/ray.tar.xz and .device/whl/*.whl (ignored by git); tools/gpu_check.sh unpacks them there.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-3.12}"
out=.device
rm -rf "$out" && mkdir -p "$out/whl" "$out/tmp"
fetch() {  # the wheels for that python, no dependencies (the image has the rest)
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$1" "${@:2}"
}
fetch "$out/tmp" "ray==$(python3 -c 'import ray; print(ray.__version__)' 2>/dev/null || echo 2.60.0)"
fetch "$out/whl" jsonschema jsonschema-specifications referencing rpds-py
mkdir -p "$out/tmp/site"
unzip -q "$out"/tmp/ray-*.whl -d "$out/tmp/site"
for unused in jars dashboard/client rllib data serve tune train; do
    rm -rf "$out/tmp/site/ray/$unused"
done
tar -C "$out/tmp/site" -cf - . | xz -6 -T0 >"$out/ray.tar.xz"
rm -rf "$out/tmp"
du -sh "$out"/ray.tar.xz "$out"/whl

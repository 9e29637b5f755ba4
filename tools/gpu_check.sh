#!/usr/bin/env bash
# Every check that needs a GPU, in one run that fits a lease of the GPU machine (15 minutes of device time per
# session, its start included): the device tool's `run` with
#
#   command: bash tools/gpu_check.sh        carry: [".device"]        timeout_s: 510
#
# after `bash tools/gpu_bundle.sh` here (the machine has cupy and torch but no Ray, and fetches nothing).
# Phases, each under its own limit and all under GPU_CHECK_BUDGET_S (450 s), the issue's own checks first, so
# that the long parity run last cannot starve them:
#   ray     the distributed paths on the GPU's worker (tests/distributed/test_device_paths.py, nccl);
#   bench-mlp `distgraph bench mlp --device cuda`: distgraph on cupy against torch on the same GPU;
#   train   the digits config on cuda, in one process and on one Ray worker (samples/s per epoch), then the
#           compute-bound teacher_mlp config (the scaling bench's MLP) the same two ways;
#   ops     every test that runs on "cuda" without Ray (~1,700 op, autograd and nn parity tests on cupy),
#           each test's result written as it ends (-v), so a run stopped at its limit still says what ran.
# It writes $OUT/summary.txt (the machine, each phase's result and tail) and $OUT/logs.tar.gz (every log and
# JSON), and prints the summary. GPU_CHECK_DEVICE=cpu runs the same plumbing on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-out/gpu-check}"
mkdir -p "$out/logs"
dev="${GPU_CHECK_DEVICE:-cuda}"
budget="${GPU_CHECK_BUDGET_S:-450}"
start=$SECONDS
summary="$out/summary.txt"
: >"$summary"
say() { echo "[$((SECONDS - start)) s] $*" | tee -a "$summary"; }

phase() {  # name, limit in seconds, command...: run it under what is left of the budget, log its tail
    local name=$1 limit=$2 left rc
    shift 2
    left=$((budget - (SECONDS - start)))
    ((limit > left)) && limit=$left
    if ((limit < 15)); then
        say "$name: not run (the budget is spent)"
        return
    fi
    say "$name: $* (limit ${limit} s)"
    timeout -k 5 "$limit" "$@" >"$out/logs/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc$( ((rc == 124)) && echo ' (stopped at its limit)')"
    if grep -qE " (PASSED|FAILED|ERROR|SKIPPED)" "$out/logs/$name.log"; then  # pytest -v: count, name failures
        say "$name: $(grep -cE ' PASSED' "$out/logs/$name.log") passed, $(grep -cE ' (FAILED|ERROR)' \
            "$out/logs/$name.log") failed, $(grep -cE ' SKIPPED' "$out/logs/$name.log") skipped"
        grep -oE "(FAILED|ERROR) tests/[^ ]+" "$out/logs/$name.log" | sort -u | head -n 40 | sed 's/^/    /' >>"$summary"
    fi
    tail -n 15 "$out/logs/$name.log" | sed 's/^/    /' >>"$summary"
}

# Ray and jsonschema from the bundle, where the machine has no Ray of its own; distgraph from this checkout.
site=/tmp/dg-site
if ! python3 -c "import ray" 2>/dev/null; then
    if [ ! -f .device/ray.tar.xz ]; then
        say "no Ray here and no .device/ray.tar.xz: run tools/gpu_bundle.sh and carry .device"
    else
        mkdir -p "$site"
        xz -dc .device/ray.tar.xz | tar -C "$site" -xf -
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .device/whl/*.whl >"$out/logs/pip.log" 2>&1 || say "pip could not install .device/whl (logs/pip.log)"
        export PYTHONPATH="$site"
        python3 -c "import ray" 2>>"$out/logs/pip.log" || say "the bundle's Ray does not import with this \
python3 ($(python3 -V)): run tools/gpu_bundle.sh $(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    fi
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=0
python3 - 2>&1 <<'EOF' | tee -a "$summary"
import importlib, platform, subprocess
print("python", platform.python_version(), "on", platform.node())
for name in ("numpy", "cupy", "torch", "ray", "distgraph"):
    try:
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as exc:  # noqa: BLE001  (report what is missing, go on)
        print(f"{name}: cannot import ({type(exc).__name__}: {exc})")
import distgraph as dg
print("distgraph sees a GPU:", dg.cuda_is_available())
try:
    print(subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout.strip())
except (OSError, subprocess.SubprocessError) as exc:
    print("nvidia-smi:", exc)
try:  # a Trainer on cuda waits its timeout (120 s) for a GPU bundle Ray cannot see: say what Ray sees first
    import ray

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    print("Ray's resources:", {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")})
    ray.shutdown()
except Exception as exc:  # noqa: BLE001  (report it, go on)
    print(f"Ray could not start: {type(exc).__name__}: {exc}")
EOF

pytest=(python3 -m pytest -p no:cacheprovider -p no:warnings -o addopts= -v -rfE --timeout 120)
phase ray 120 "${pytest[@]}" tests/distributed/test_device_paths.py tests/distributed/test_allreduce.py -k "$dev or nccl"
phase bench-mlp 45 python3 -m distgraph bench mlp --device "$dev" --json-out "$out/logs/mlp.json"
phase train-local 40 python3 -m distgraph train examples/configs/digits.yaml --device "$dev" --quiet \
    --checkpoint-dir /tmp/dg-ckpt-local --json-out "$out/logs/train-local.json"
phase train-ray 60 python3 -m distgraph train examples/configs/digits.yaml --device "$dev" --backend ray \
    --workers 1 --quiet --checkpoint-dir /tmp/dg-ckpt-ray --json-out "$out/logs/train-ray.json"
phase teacher-local 45 python3 -m distgraph train examples/configs/teacher_mlp.yaml --device "$dev" --quiet \
    --json-out "$out/logs/teacher-local.json"
phase teacher-ray 60 python3 -m distgraph train examples/configs/teacher_mlp.yaml --device "$dev" --backend ray \
    --workers 1 --quiet --json-out "$out/logs/teacher-ray.json"
phase ops 240 "${pytest[@]}" -n 8 -m "not ray" -k cuda tests
tar -C "$out" -czf "$out/logs.tar.gz" logs && rm -rf "$out/logs"
say "done; $out/summary.txt and $out/logs.tar.gz"

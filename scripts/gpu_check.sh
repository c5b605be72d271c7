#!/usr/bin/env bash
# The checks a GPU must run before the pack's speed and exactness claims hold there, in one go, writing
# everything under one folder (default gpu-check/):
#   device.txt                the card, driver, torch and transformers
#   contracts-bf16.txt/-fp16  every family's exactness (off == vanilla) and cached-decoding tests on CUDA;
#                             cached decoding is held to the dtype's rounding (tests/helpers.CACHED_ATOL)
#   bench-3b.*, bench-7b.*    the speed bench at Qwen2.5-VL-3B's and 7B's real depths (random weights):
#                             vanilla, off and auto at work 0.5, 0.33, 0.22, 0.11, with peak GPU memory
#                             off == vanilla stays bit-exact on a GPU too (the same kernels on the same
#                             shapes); a cached step and a fresh forward run different shapes, so their
#                             kernels sum in different orders: held to the dtype's rounding, not bit-exact
#   offload.txt               8-bit and 4-bit weights cycled offload -> GPU -> offload -> GPU as ComfyUI moves
#                             them: "answers equal after the cycle: True" and the GPU memory back at its start
#   syncs.txt                 every host sync of one encode + generate per family (both stages on), by source
#                             line and count, under torch.cuda.set_sync_debug_mode("warn")
#   roundtrip.txt             tokens that waited on the CPU (as the nodes keep them) answer bit for bit as
#                             tokens that stayed on the GPU: "True" per family
#   summary.txt               each step's exit status
# `--cpu` runs the same steps, reduced to fit a CPU (fp32, 2 bench layers, one input), so the script is
# known to work before a GPU ever runs it; tests/test_gpu_check.py runs that mode.
# Usage: bash scripts/gpu_check.sh [--cpu] [--out DIR]. On a GPU it needs about 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=cuda
out=gpu-check
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) mode=cpu ;;
        --out) out=$2; shift ;;
        *) echo "usage: bash scripts/gpu_check.sh [--cpu] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
py=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
: > "$out/summary.txt"

# Record a step's exit status and go on: one failing step must not hide the others' results.
step() {
    local name=$1
    shift
    "$@"
    echo "$name: exit $?" >> "$out/summary.txt"
}

# What the machine lacks, without touching an installed torch (requirements.txt leaves torch unpinned).
if ! "$py" -c "import transformers, pytest" >/dev/null 2>&1; then
    "$py" -m pip install -q -r requirements.txt -r requirements-dev.txt
fi

"$py" - > "$out/device.txt" 2>&1 <<'EOF'
import platform, torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("cpu", platform.processor() or platform.machine(), "threads", torch.get_num_threads())
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print("gpu", props.name, f"capability {props.major}.{props.minor}", f"{props.total_memory / 2**30:.0f} GiB")
EOF

contracts="tests/test_exactness.py tests/test_merged_decode.py tests/test_llava_onevision.py tests/test_internvl.py tests/test_minicpmv.py"
select="equals_vanilla or cached_decoding"
if [ "$mode" = cuda ]; then
    for dtype in bf16 fp16; do
        step "contracts $dtype" env ILLAVA_TEST_DEVICE=cuda ILLAVA_TEST_DTYPE=$dtype \
            "$py" -m pytest -q -p no:cacheprovider -k "$select" $contracts > "$out/contracts-$dtype.txt" 2>&1
    done
    for arch in 3b 7b; do
        step "bench $arch" "$py" -m illava bench --arch "qwen2.5-vl-$arch" --device cuda --dtype bf16 \
            --presets off auto --budgets 0.5 0.33 0.22 0.11 --json "$out/bench-$arch.json" > "$out/bench-$arch.log" 2>&1
    done
    for check in offload syncs roundtrip; do
        step "$check" "$py" -m illava.lab.device_check "$check" --device cuda > "$out/$check.txt" 2>&1
    done
else
    for check in offload roundtrip; do
        step "$check" "$py" -m illava.lab.device_check "$check" --device cpu > "$out/$check.txt" 2>&1
    done
    step "contracts fp32" env ILLAVA_TEST_DEVICE=cpu ILLAVA_TEST_DTYPE=fp32 \
        "$py" -m pytest -q -p no:cacheprovider -k "$select" tests/test_exactness.py > "$out/contracts-fp32.txt" 2>&1
    step "bench 3b" "$py" -m illava bench --arch qwen2.5-vl-3b --device cpu --dtype fp32 --layers 2 --inputs "1 image" \
        --presets off auto --budgets 0.33 --new-tokens 2 --repeats 1 --json "$out/bench-3b.json" > "$out/bench-3b.log" 2>&1
fi
cat "$out/summary.txt"
! grep -qv ": exit 0$" "$out/summary.txt"

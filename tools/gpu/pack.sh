#!/usr/bin/env bash
# Step 1 of the GPU check, here: builds the x86-64 binaries that tools/gpu/check.sh runs on the device machine,
# fetches the GPU build of ONNX Runtime from PyPI (the device machine cannot download), and packs both into parts
# that fit beside the working tree in one device call (at most 64 MiB a call, the ~32 MiB tracked tree included).
#
#   tools/gpu/pack.sh [PART_MIB]        (default 28)
#
# Writes gpu-carry/part-NN (ignored by git) and prints the device calls to make. The CUDA and cuDNN libraries are
# not packed: the device image has them (the nvidia-* wheels of its PyTorch, CUDA 13), and check.sh points
# samserve at them.
set -euo pipefail
cd "$(dirname "$0")/../.."
part_mib=${1:-28}
ort_gpu_version=1.31.1
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

# The service, the in-process benchmark and the parity test binaries (release, stripped). The test binaries find
# the fixtures and target/release/samserve under the path they were built in: check.sh links it to the tree there.
cargo build --release
mkdir -p "$stage/bin"
{
  cargo bench --bench pipeline --no-run --message-format=json
  cargo test --release --no-run --test parity --test amg --message-format=json
} | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | while read -r exe; do
  name=$(basename "$exe")
  cp "$exe" "$stage/bin/${name%-*}"
done
cp target/release/samserve "$stage/bin/"
strip "$stage"/bin/*
pwd >"$stage/bin/ROOT"

# onnxruntime-gpu for the device's Python 3.12: its library and CUDA provider for samserve, its Python package for
# the bare ONNX Runtime baseline (tools/gpu/bare_ort.py).
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 -d "$stage/wheel" \
  "onnxruntime-gpu==$ort_gpu_version"
mkdir -p "$stage/site"
unzip -q "$stage"/wheel/onnxruntime_gpu-*.whl 'onnxruntime/*' -x 'onnxruntime/capi/libonnxruntime_providers_tensorrt.so' \
  'onnxruntime/transformers/*' 'onnxruntime/quantization/*' 'onnxruntime/tools/*' -d "$stage/site"
echo "$ort_gpu_version" >"$stage/site/ORT_VERSION"

rm -rf gpu-carry
mkdir -p gpu-carry
tar -C "$stage" -cf - bin site | xz -9 -T0 | split -b "${part_mib}M" -d -a 2 - gpu-carry/part-
parts=(gpu-carry/part-*)
echo "Packed ${#parts[@]} parts into gpu-carry/ ($(du -sh gpu-carry | cut -f1))."
echo "Send them back to back (a warm device machine is given back after 30 s idle), one device call each; the"
echo "call with the last part runs the check:"
for part in "${parts[@]::${#parts[@]}-1}"; do
  echo "  run  command='ls -l gpu-carry'  carry=['$part']"
done
echo "  run  command='bash tools/gpu/check.sh'  carry=['${parts[-1]}']  timeout_s=540"
echo "then give the machine back, and paste \$OUT/gpu-report.md (in files_at) into BENCHMARKS.md."

#!/usr/bin/env bash
# Step 2 of the GPU check, on the device machine, after the parts of tools/gpu/pack.sh arrived in gpu-carry/:
# unpacks them, then on CUDA runs the parity tests, `samserve bench`, the in-process benchmark and bare ONNX Runtime
# (tools/gpu/bare_ort.py), the CPU runs for the ratios, and `serve --device auto`. Writes $OUT/gpu-report.md (the
# section for BENCHMARKS.md) and the raw outputs beside it.
#
# It can be tried out on any machine with the CPU: `GPU_CHECK_DEVICE=cpu bash tools/gpu/check.sh` (no parts needed
# then: it uses target/release and the library `cargo build` fetched).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
device=${GPU_CHECK_DEVICE:-cuda}
carry=$PWD/gpu-carry
unpacked=$carry/unpacked
failures=()
step() { echo "== $*" | tee -a "$out/log.txt"; }
run() { "$@" 2>&1 | tee -a "$out/log.txt"; return "${PIPESTATUS[0]}"; }

if [ "$device" = cuda ]; then
  if [ ! -d "$unpacked" ]; then
    step "unpacking $(ls "$carry"/part-* | wc -l) parts"
    cat "$carry"/part-* | python3 -c 'import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode="r|xz").extractall(sys.argv[1], filter="tar")' "$unpacked" || exit 1
  fi
  bin=$unpacked/bin
  site=$unpacked/site
  library=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.*)
  # CUDA 13 and cuDNN 9 from the image's PyTorch (nvidia-* wheels): samserve preloads <site>/nvidia/*/lib.
  nvidia=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])')
  ln -sfn "$nvidia" "$site/nvidia"
  # The test binaries look for the fixtures and target/release/samserve under the path they were built in.
  root=$(cat "$bin/ROOT")
  if [ "$root" != "$PWD" ] && [ ! -e "$root" ]; then mkdir -p "$(dirname "$root")" && ln -s "$PWD" "$root"; fi
  mkdir -p target/release && cp "$bin/samserve" target/release/samserve
  export PYTHONPATH=$site
  run nvidia-smi -L
else
  bin=$out/bin
  mkdir -p "$bin"
  cp target/release/samserve "$bin/"
  for name in pipeline parity amg; do
    cp "$(ls -t target/release/deps/$name-* | grep -v '\.d$' | head -1)" "$bin/$name"
  done
  library=$(ls "${SAMSERVE_ORT_CACHE:-$HOME/.cache/samserve}"/onnxruntime-*/libonnxruntime.so.* | head -1)
fi
echo "library: $library" | tee -a "$out/log.txt"
samserve() { run "$bin/samserve" --ort-lib "$library" "$@"; }
models=(tests/fixtures/models/amg)
photo=tests/fixtures/images/landscape.png

step "parity tests on $device"
for test in parity amg; do
  SAMSERVE_TEST_DEVICE=$device SAMSERVE_TEST_ORT_LIB=$library run "$bin/$test" --test-threads 1 ||
    failures+=("$test tests")
done

step "serve --device auto says where it runs"
"$bin/samserve" --ort-lib "$library" --device auto serve --port 0 --data-dir "$out/data" >"$out/serve.txt" 2>&1 &
server=$!
for _ in $(seq 50); do grep -q "http://" "$out/serve.txt" && break; sleep 0.2; done
address=$(grep -o 'http://[0-9.:]*' "$out/serve.txt" | head -1)
python3 -c "import json, urllib.request; print(json.dumps([{k: m[k] for k in ('name', 'encoder_device', 'decoder_device')} for m in json.load(urllib.request.urlopen('$address/v1/models'))['models']]))" |
  tee "$out/models.json" || failures+=("serve --device auto")
kill "$server"

step "samserve bench"
for placement in "--device $device" "--device $device --decoder-device cpu" "--device cpu"; do
  # shellcheck disable=SC2086
  samserve $placement bench --model "${models[0]}" --runs 50 "$photo" | tee -a "$out/bench.txt" || failures+=("bench $placement")
done

step "in-process stages and bare ONNX Runtime"
for model in "${models[@]}" builtin; do
  for on in "$device" cpu; do
    run "$bin/pipeline" --ort-lib "$library" --device "$on" --model "$model" --json \
      --only encode,decoder_run,decoder_run_host_embedding,segment_click_rle,everything >>"$out/pipeline.jsonl" ||
      failures+=("pipeline $model $on")
  done
done
for on in "$device" cpu; do
  run python3 tools/gpu/bare_ort.py "${models[0]}" --device "$on" >>"$out/bare.jsonl" || failures+=("bare $on")
done

step "report"
python3 - "$out" "$device" <<'PY' | tee "$out/gpu-report.md"
import json, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
runs = [json.loads(line) for line in (out / "pipeline.jsonl").read_text().splitlines() if line.startswith("{")]
bare = {r["providers"][0].startswith("CUDA") and "cuda" or "cpu": r for r in
        (json.loads(line) for line in (out / "bare.jsonl").read_text().splitlines() if line.startswith("{"))}
on = lambda r: "cpu" if r["devices"][0] == "cpu" else "cuda"
print(f"## GPU ({device})\n")
print("Made by `tools/gpu/pack.sh` + `tools/gpu/check.sh` on the device machine. Milliseconds, p50.\n")
print("| model | stage | GPU | CPU | CPU / GPU |\n| --- | --- | --- | --- | --- |")
for model in dict.fromkeys(r["model"] for r in runs):
    gpu = next(r for r in runs if r["model"] == model and on(r) != "cpu")
    cpu = next(r for r in runs if r["model"] == model and on(r) == "cpu")
    for stage, times in gpu["stages"].items():
        other = cpu["stages"][stage]["p50"]
        print(f"| {model} | {stage} | {times['p50']:.3f} | {other:.3f} | {other / times['p50']:.2f}x |")
fixture = next(r for r in runs if r["model"] == "amg" and on(r) != "cpu")["stages"]
if "cuda" in bare or device == "cpu":
    b = bare.get("cuda", bare.get("cpu"))
    print("\nSame GPU, fixture model: samserve in process vs bare ONNX Runtime (Python, IoBinding):\n")
    print("| | samserve | bare ORT | samserve / bare |\n| --- | --- | --- | --- |")
    print(f"| decoder run, one click | {fixture['decoder_run']['p50']:.3f} | {b['decoder_run']['p50']:.3f} | "
          f"{fixture['decoder_run']['p50'] / b['decoder_run']['p50']:.2f} |")
    print(f"| encode (samserve: + preprocess) | {fixture['encode']['p50']:.3f} | {b['encoder_run']['p50']:.3f} | "
          f"{fixture['encode']['p50'] / b['encoder_run']['p50']:.2f} |")
print("\nDevices reported by `serve --device auto`: `" + (out / "models.json").read_text().strip() + "`")
PY

if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED: ${failures[*]}" | tee -a "$out/log.txt"
  exit 1
fi
echo "all GPU checks passed" | tee -a "$out/log.txt"

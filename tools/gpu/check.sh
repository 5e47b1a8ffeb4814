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
scratch=$(mktemp -d) # what must not come back in $OUT (8 files at most)
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
  bin=$scratch/bin
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
"$bin/samserve" --ort-lib "$library" --device auto serve --port 0 --data-dir "$scratch/data" >"$out/serve.txt" 2>&1 &
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

step "batch throughput: 1 and 4 images in flight (headroom that encoder batching could use)"
mkdir -p "$scratch/batch/images"
python3 - "$scratch/batch" "$photo" <<'PY'
import json, shutil, sys
from pathlib import Path
folder, photo = Path(sys.argv[1]), sys.argv[2]
for i in range(64):
    shutil.copy(photo, folder / "images" / f"{i:03}.png")
prompts = {f"{i:03}.png": [{"box": [100 + i, 80, 420, 330]}] for i in range(64)}
(folder / "prompts.json").write_text(json.dumps(prompts))
PY
for workers in 1 4; do
  started=$(date +%s.%N)
  "$bin/samserve" --ort-lib "$library" --device "$device" batch "$scratch/batch/images" --prompts "$scratch/batch/prompts.json" \
    --output "$scratch/batch/results.json" --workers "$workers" >>"$out/log.txt" 2>&1 || failures+=("batch --workers $workers")
  python3 -c "import sys; print(f'| {sys.argv[1]} | {64 / (float(sys.argv[3]) - float(sys.argv[2])):.1f} |')" \
    "$workers" "$started" "$(date +%s.%N)" >>"$out/batch.md"
done

step "report"
python3 - "$out" "$device" <<'PY' | tee "$out/gpu-report.md" || failures+=("report")
import json, sys
from pathlib import Path
out, device = Path(sys.argv[1]), sys.argv[2]
lines = lambda name: [json.loads(l) for l in (out / name).read_text().splitlines() if l.startswith("{")]
# Written in pairs: each model on the device, then on the CPU; bare ONNX Runtime likewise.
runs, bare = lines("pipeline.jsonl"), lines("bare.jsonl")
print(f"## GPU (`{device}`)\n")
print("Made by `tools/gpu/pack.sh` + `tools/gpu/check.sh` on the device machine. Milliseconds, p50; placements "
      + ", ".join(f"{r['model']}: {'/'.join(r['devices'])}" for r in runs) + ".\n")
print(f"| model | stage | {device} | cpu | cpu / {device} |\n| --- | --- | --- | --- | --- |")
for on_device, on_cpu in zip(runs[::2], runs[1::2]):
    for stage, times in on_device["stages"].items():
        other = on_cpu["stages"][stage]["p50"]
        print(f"| {on_device['model']} | {stage} | {times['p50']:.3f} | {other:.3f} | {other / times['p50']:.2f}x |")
ours, theirs = runs[0]["stages"], bare[0]
print(f"\nSame device ({device}), {runs[0]['model']} model: samserve in process vs bare ONNX Runtime (Python, IoBinding):\n")
print("| | samserve | bare ORT | samserve / bare |\n| --- | --- | --- | --- |")
for label, mine, base in [("decoder run, one click", "decoder_run", "decoder_run"),
                          ("encode (samserve: + preprocess)", "encode", "encoder_run")]:
    print(f"| {label} | {ours[mine]['p50']:.3f} | {theirs[base]['p50']:.3f} | {ours[mine]['p50'] / theirs[base]['p50']:.2f} |")
print(f"\n`samserve batch` on {device}, 64 copies of the photo, one box each:\n")
print("| images in flight (`--workers`) | images/s |\n| --- | --- |")
print((out / "batch.md").read_text().strip())
print("\nDevices reported by `serve --device auto`: `" + (out / "models.json").read_text().strip() + "`")
PY

if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED: ${failures[*]}" | tee -a "$out/log.txt"
  exit 1
fi
echo "all GPU checks passed" | tee -a "$out/log.txt"

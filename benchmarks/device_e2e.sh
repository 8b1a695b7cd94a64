#!/usr/bin/env bash
# End-to-end on a real GPU and a real engine: `transformers serve --continuous-batching` on a
# random-weight model (no downloads), replayed by `kairosbench run`, profiled by NVML.
# READ-ONLY on the GPU: nothing here changes clocks or power limits (the gateway, if used,
# runs with its dry-run actuator).
#
#   bash benchmarks/device_e2e.sh OUT_DIR [extra kairosbench run flags...]
#
# Needs: python3 with torch + transformers (the device image), wheels for transformers serve's
# web stack in .whl/ (see docs/replay.md "Against a real engine").
set -uo pipefail
OUT=${1:?out dir}; shift
mkdir -p "$OUT"; rm -rf /tmp/run /tmp/prof
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.draw,power.limit --format=csv > "$OUT/gpu.csv" 2>&1
python3 benchmarks/make_tiny_model.py /tmp/tiny --layers "${LAYERS:-16}" --hidden "${HIDDEN:-2048}" > "$OUT/model.json" 2>&1 || { cat "$OUT/model.json"; exit 1; }
mkdir -p "${HF_HUB_CACHE:-$HOME/.cache/huggingface/hub}"  # its /v1/models scans the hub cache and 500s without one
( transformers serve /tmp/tiny --continuous-batching --host 127.0.0.1 --port 8000 > "$OUT/serve.log" 2>&1 & echo $! > /tmp/serve.pid )
for i in $(seq 1 120); do
  code=$(curl -s -o "$OUT/models.json" -w '%{http_code}' http://127.0.0.1:8000/v1/models 2>/dev/null)
  [ "$code" = 200 ] && break
  sleep 1
done
[ "$code" = 200 ] || { cat "$OUT/models.json"; tail -50 "$OUT/serve.log"; exit 1; }
# WRAP=1: an outer `kairosbench profile` around the run (the run's own profiler is on by
# default too: `--profile auto` picks this host's NVML GPUs for a non-emulated endpoint).
wrap=()
[ "${WRAP:-0}" = 1 ] && wrap=(python3 -m kairosbench.cli profile --out /tmp/prof --source nvml --)
"${wrap[@]}" python3 -m kairosbench.cli run --endpoint http://127.0.0.1:8000 --model /tmp/tiny --tokenizer /tmp/tiny \
    --out /tmp/run "$@" 2>&1 | tee "$OUT/run.log"
kill "$(cat /tmp/serve.pid)" 2>/dev/null
for f in manifest.json requests.parquet sessions.parquet power.parquet control.parquet; do cp "/tmp/run/$f" "$OUT/" 2>/dev/null; done
tail -c 200000 "$OUT/serve.log" > "$OUT/serve.tail.log"; rm -f "$OUT/serve.log" "$OUT/models.json" "$OUT/model.json"
ls -la "$OUT"

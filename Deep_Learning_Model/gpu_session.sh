#!/usr/bin/env bash
# The deep-model CV on a lent GPU, one step per device call (Deep_Learning_Model/README.md, "Training on a lent
# GPU"), run from the repository root there:
#
#   bash Deep_Learning_Model/gpu_session.sh bench          # call 1: the speed of this GPU, and the first carried parts
#   bash Deep_Learning_Model/gpu_session.sh cv MINUTES     # call 2, 3, ...: the CV, going on where the last call stopped
#
# Carried files come in $CARRIED (default .gpu/): the nibabel wheel and the parts of the packed slice cache
# (cache.part*). They are kept in $WORK (default /tmp/brats_gpu), with the cache, the speed measured by `bench`,
# the epochs planned from it (Deep_Learning_Model.gpu_plan, once) and the runs: all of it lasts while the machine
# stays warm. Each `cv` call trains and predicts (cv all --parallel $PARALLEL --no-score) until a minute before
# MINUTES are over (the plan fits the trainings into the first `cv` call's time less RESERVE minutes, default
# 1.5, for the out-of-fold maps that follow; a later call finishes what is left), and then writes to $OUT what
# scoring needs here: cv.tgz (logs, summaries, out-of-fold label maps; no weights, no temporary files) and the
# final exports in parts below 16 MiB (unet.pt.part00, ...). `cv all` runs under `timeout`, so that what is done
# comes back even when a step overruns. Extra options: BENCH_ARGS (training_gpu.py), PLAN_ARGS (gpu_plan, which
# counts each run's steps in the CV's splits: with --splits in CV_OPTIONS, give it the same --splits),
# CV_OPTIONS (cv all) and CV_ARGS (train.py, after cv all's --).
set -euo pipefail
WORK=${WORK:-/tmp/brats_gpu}
CARRIED=${CARRIED:-.gpu}
PARALLEL=${PARALLEL:-6}
PY=${PYTHON:-python3}
: "${OUT:?OUT must name the folder for what comes back}"
mkdir -p "$WORK/parts" "$OUT"
for f in "$CARRIED"/*; do
  if [ -f "$f" ] && [ ! -e "$WORK/parts/${f##*/}" ]; then cp "$f" "$WORK/parts/"; fi
done
if compgen -G "$WORK/parts/*.whl" >/dev/null && [ ! -d "$WORK/site" ]; then
  $PY -m pip install -q --no-index --no-deps --target "$WORK/site" "$WORK"/parts/*.whl
fi
export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ls -la "$WORK/parts"

case "${1:-}" in
bench)
  nvidia-smi || true
  # shellcheck disable=SC2086 # BENCH_ARGS holds several options
  $PY benchmarks/training_gpu.py --paths resident --concurrent "$PARALLEL" --warmup 10 --steps 50 \
    ${BENCH_ARGS:-} | tee "$OUT/bench.txt"
  tail -n 1 "$OUT/bench.txt" >"$WORK/bench.json"
  ;;
cv)
  minutes=${2:?cv needs the minutes this call may take}
  start=$(date +%s)
  if [ ! -s "$WORK/bench.json" ]; then
    echo "no $WORK/bench.json: this machine did not run the bench call (a fresh machine?); start again" >&2
    exit 3
  fi
  if [ ! -d "$WORK/cache" ]; then
    if [ "$(find "$WORK/parts" -name 'cache.part*' | wc -l)" -lt 2 ]; then
      echo "the cache parts are not all here: $(ls "$WORK/parts" | tr '\n' ' ')(carry .gpu/b in this call)" >&2
      exit 3
    fi
    cat "$WORK"/parts/cache.part* >"$WORK/cache.tar.xz"
    rm -rf "$WORK/cache.unpacking"
    $PY -m brats_core.transport unpack "$WORK/cache.tar.xz" "$WORK/cache.unpacking"
    mv "$WORK/cache.unpacking" "$WORK/cache"  # a call killed while unpacking leaves no half cache behind
  fi
  cache=$(find "$WORK/cache" -mindepth 1 -maxdepth 1 -type d | head -n 1)
  left=$(awk -v m="$minutes" -v s="$(($(date +%s) - start))" 'BEGIN { printf "%.2f", m - 1 - s / 60 }')
  if [ ! -s "$WORK/epochs" ]; then
    # shellcheck disable=SC2086
    $PY -m Deep_Learning_Model.gpu_plan "$WORK/bench.json" --minutes "$left" --reserve "${RESERVE:-1.5}" \
      --parallel "$PARALLEL" --from-cache "$cache" --out "$WORK/cv" ${PLAN_ARGS:-} >"$WORK/epochs.tmp"
    mv "$WORK/epochs.tmp" "$WORK/epochs"
  fi
  echo "training $(cat "$WORK/epochs") epochs per run, $left minutes in this call"
  # shellcheck disable=SC2086
  timeout -k 10 "$(awk -v l="$left" 'BEGIN { printf "%d", 60 * l + 30 }')" \
    $PY -m Deep_Learning_Model.cv all --from-cache "$cache" --out "$WORK/cv" --time-limit "$left" \
    --parallel "$PARALLEL" --no-score ${CV_OPTIONS:-} -- --epochs "$(cat "$WORK/epochs")" ${CV_ARGS:-} || true
  tar czf "$OUT/cv.tgz" --exclude='*.pt' --exclude='*.tmp' --exclude='*.tmp.npz' --exclude=snapshots -C "$WORK" cv
  if [ "$(stat -c %s "$OUT/cv.tgz")" -ge $((16 * 1024 * 1024)) ]; then
    echo "warning: cv.tgz is $(stat -c %s "$OUT/cv.tgz") bytes, over the 16 MiB a file may have to come back" >&2
  fi
  for model in unet sspp; do
    final="$WORK/cv/$model/final/export.pt"
    if [ -f "$final" ]; then split -b 15M -d "$final" "$OUT/$model.pt.part"; fi
  done
  ls -la "$OUT"
  ;;
*)
  echo "usage: $0 bench | cv MINUTES" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# Here, before and after the device calls of a lent-GPU session (Deep_Learning_Model/README.md, "Training on a
# lent GPU"); run from the repository root:
#
#   bash Deep_Learning_Model/gpu_prepare.sh parts DATA     # cache DATA, pack it, split it into .gpu/a and .gpu/b
#   bash Deep_Learning_Model/gpu_prepare.sh slim           # before the calls: a branch without the large files
#   bash Deep_Learning_Model/gpu_prepare.sh restore        # after them: back to the branch you were on
#
# A call carries at most 64 MiB with the working tree. The packed 27-case cache is about 70 MiB and the shipped
# exports, the sample case and results/ are 53 MiB of the tree, which the device needs none of: `slim` commits their
# removal on a throw-away branch (gpu-slim) so that the tree travels at about 2 MiB, and `parts` splits the cache so that
# the nibabel wheel and the first part (.gpu/a, call 1) and the rest (.gpu/b, call 2) each fit beside it.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
LARGE=(Deep_Learning_Model/checkpoints/unet.pt Deep_Learning_Model/checkpoints/sspp.pt
       sspp_unet_api/sample/sample_case.zip Machine_Learning_Model/checkpoints Naive_Model/checkpoints results)
#: What one call may carry (64 MiB), less a margin: the slim tree with .gpu/a must stay below it.
LIMIT=$((62 * 1024 * 1024))

ignore_gpu_folder() {
  local exclude
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  grep -qsx '/.gpu/' "$exclude" || echo '/.gpu/' >>"$exclude"
}

case "${1:-}" in
parts)
  data=${2:?parts needs the data folder (../shared/data/brats_dev)}
  ignore_gpu_folder
  rm -rf .gpu && mkdir -p .gpu/a .gpu/b
  key=$($PY -m brats_app.cli cache "$data" | sed -n 's/^cache directory: //p')
  $PY -m brats_core.transport pack "$key" .gpu/cache.tar.xz
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d .gpu/a nibabel=="$($PY -c 'import nibabel; print(nibabel.__version__)')"
  # call 1 carries the wheel and 52 MiB of the cache, call 2 the rest
  head -c $((52 * 1024 * 1024)) .gpu/cache.tar.xz >.gpu/a/cache.part00
  tail -c +$((52 * 1024 * 1024 + 1)) .gpu/cache.tar.xz >.gpu/b/cache.part01
  rm .gpu/cache.tar.xz
  du -sh .gpu/a .gpu/b
  ;;
slim)
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "commit or stash your changes first" >&2
    exit 1
  fi
  mkdir -p .gpu
  ignore_gpu_folder
  git rev-parse --abbrev-ref HEAD >.gpu/branch
  git switch -q -c gpu-slim
  git rm -q -r "${LARGE[@]}"
  git commit -q -m "gpu-slim: the tree a lent GPU needs (no shipped checkpoints, no sample case, no results)"
  tree=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
  carried=$( (du -sb .gpu/a 2>/dev/null || echo 0) | cut -f1)
  echo "tracked tree now $tree bytes; with .gpu/a $((tree + carried)) bytes (call 1 carries both)"
  if [ $((tree + carried)) -gt "$LIMIT" ]; then
    echo "over $LIMIT bytes: call 1 would not fit its 64 MiB; slim the tree further before any device call" >&2
    exit 1
  fi
  ;;
restore)
  git switch -q "$(cat .gpu/branch)"
  git branch -q -D gpu-slim
  git status --short
  ;;
*)
  echo "usage: $0 parts DATA | slim | restore" >&2
  exit 2
  ;;
esac

#!/usr/bin/env bash
# The book's GPU run, as one script, for a GPU machine without internet access.
#
# Prepare once, here, in the repository root (the GPU machine has PyTorch 2.11 on Python 3.12 but not mlxtend,
# diffusers or importlib_metadata, and reaches no package index):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       mlxtend==0.25.0 diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2
#
# Then: run(command="bash tools/gpu_run.sh", carry=[".whl"], timeout_s=600) and, here,
#
#   mkdir -p runs/results && for f in <files_at>/*.tgz; do tar xzf "$f" -C runs/results; done
#   python tools/results.py --work-dir runs/results --install-only     # model -> package, tables -> book/data
#
# then re-execute the chapters (README: "Work on a chapter") so that their outputs follow the new data.
# A run cut short by the time limit leaves its finished parts in $OUT too: carry runs/results back in and rerun
# with RESUME=runs/results to continue where it stopped.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_run: installing the carried wheels failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
WORK=/tmp/results
if [ -n "${RESUME:-}" ] && [ -d "$RESUME" ]; then cp -r "$RESUME" "$WORK"; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"
# ${BUDGET:-540} s for everything, so that the results come back inside one 600 s call
timeout --signal=INT "${BUDGET:-540}" python3 tools/results.py --device cuda --work-dir "$WORK" --no-install \
    2>&1 | tee "$OUT/results_log.txt"
status=${PIPESTATUS[0]}
# at most 8 files come back, 16 MiB each: the model in one archive, every table in another
tar czf "$OUT/model.tgz" -C "$WORK" model 2>/dev/null
tar czf "$OUT/data.tgz" -C "$WORK" --exclude=run --exclude=model . 2>/dev/null
ls -la "$OUT"
exit "$status"

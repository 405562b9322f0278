#!/usr/bin/env bash
# Build .venv-peers (repo root): a separate venv with the data loaders benchmarks/peers.py compares
# lakeio against (WebDataset, LitData, MosaicML Streaming, FFCV). Never touches .venv.
#
# Run: bash benchmarks/peers-setup.sh        (idempotent; re-running only fills in what is missing)
#
# A library that fails to install is skipped and recorded in .venv-peers/install-status.txt;
# peers.py skips loaders whose library does not import.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-peers"
PY="${PYTHON:-python3.11}"
STATUS="$VENV/install-status.txt"
start=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV" || { echo "cannot create $VENV with $PY" >&2; exit 1; }
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
: >"$STATUS"

step() {  # step NAME COMMAND...: run, record ok/FAILED, keep going
    local name="$1"; shift
    echo "== $name"
    if "$@" >"$VENV/install-$name.log" 2>&1; then
        echo "$name: ok" | tee -a "$STATUS"
    else
        echo "$name: FAILED (see .venv-peers/install-$name.log)" | tee -a "$STATUS"
        tail -n 15 "$VENV/install-$name.log" | sed 's/^/    /'
    fi
}

# torch first, pinned: on Python 3.11 pip takes both from this machine's disk, and every later
# install sees them already satisfied instead of pulling another build.
step pip "${PIP[@]}" --upgrade pip
step torch "${PIP[@]}" torch==2.14.1 torchvision==0.29.1 || true
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    echo "torch/torchvision did not install; nothing else can run" >&2
    exit 1
fi
TORCH_PIN=(torch==2.14.1 torchvision==0.29.1)  # repeated on every install so nothing moves them

# The data generator: lakeio.testing.images needs only numpy, Pillow and scikit-image.
step generator "${PIP[@]}" "${TORCH_PIN[@]}" numpy pillow scikit-image
step lakeio-nodeps "${PIP[@]}" --no-deps -e "$ROOT"
# lakeio's own runtime dependencies (not torch: the pinned one above), so peers.py can run
# lakeio beside FFCV in one process tree and one run.
step lakeio-deps "${PIP[@]}" "${TORCH_PIN[@]}" "dask[array]>=2024.8" "distributed>=2024.8" \
    "diskcache>=5.6" "simplejpeg>=1.7" "bokeh>=3.1" "prometheus-client>=0.17" "numba>=0.59" \
    "fsspec>=2024.6" "tqdm>=4.66"

step webdataset "${PIP[@]}" "${TORCH_PIN[@]}" webdataset
step litdata "${PIP[@]}" "${TORCH_PIN[@]}" litdata
step mosaicml-streaming "${PIP[@]}" "${TORCH_PIN[@]}" mosaicml-streaming

# FFCV compiles a C extension against libturbojpeg and OpenCV (found with pkg-config).
need_apt=()
for pkg in libturbojpeg0-dev libopencv-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    step ffcv-apt bash -c "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${need_apt[*]}"
fi
step ffcv-deps "${PIP[@]}" "${TORCH_PIN[@]}" numba opencv-python-headless pillow psutil tqdm terminaltables fastargs
step ffcv "${PIP[@]}" "${TORCH_PIN[@]}" ffcv

# benchmarks/metadata_peers.py: the table formats lakeio's metadata is compared with (issue 12).
# Icechunk needs zarr>=3; zarr lives only here, lakeio itself is still installed --no-deps.
step lance "${PIP[@]}" "${TORCH_PIN[@]}" pylance pyarrow
step icechunk "${PIP[@]}" "${TORCH_PIN[@]}" icechunk "zarr>=3"

echo "== import check" | tee -a "$STATUS"
"$VENV/bin/python" - <<'EOF' 2>&1 | tee -a "$STATUS"
import importlib
for mod in ("torch", "torchvision", "skimage", "webdataset", "litdata", "streaming", "ffcv",
            "lance", "pyarrow", "icechunk", "zarr"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod} {getattr(m, '__version__', '?')}")
    except Exception as e:  # a broken install is recorded, not fatal
        print(f"{mod} IMPORT FAILED: {type(e).__name__}: {e}")
EOF
echo "setup took $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV" | tee -a "$STATUS"

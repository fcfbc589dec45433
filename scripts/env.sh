# Source this file (`. scripts/env.sh`): it makes sure the cached Python venv that
# provides libtorch (PyTorch's wheel) and Gymnasium (for the parity tests) exists,
# and exports what the build needs to find them. The venv lives outside the clone
# so every checkout on the machine reuses it.
OXRAY_VENV="${OXRAY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxray/venv}"
if ! "$OXRAY_VENV/bin/python" -c 'import torch, gymnasium' >/dev/null 2>&1; then
    echo "oxray: installing torch==2.13.0 and gymnasium==1.2.2 into $OXRAY_VENV (once)" >&2
    python3 -m venv "$OXRAY_VENV" &&
        "$OXRAY_VENV/bin/pip" install --quiet --upgrade pip &&
        "$OXRAY_VENV/bin/pip" install --quiet torch==2.13.0 gymnasium==1.2.2 ||
        { echo "oxray: could not set up $OXRAY_VENV" >&2; return 1 2>/dev/null || exit 1; }
fi
export OXRAY_VENV
export OXRAY_PYTHON="$OXRAY_VENV/bin/python"
export LIBTORCH_USE_PYTORCH=1
# torch-sys's build script asks `python` where torch is; make that the venv's.
export PATH="$OXRAY_VENV/bin:$PATH"

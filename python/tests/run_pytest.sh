#!/bin/sh
# Runs the Python binding's pytest suite for CTest (python/CMakeLists.txt):
#   run_pytest.sh PYTHON TESTS_DIR [pytest arguments...]
# Exits 77 (CTest's SKIP_RETURN_CODE) when PYTHON has no pytest module
# (Debian: apt-get install python3-pytest, see scripts/install-deps.sh);
# every other outcome is pytest's own exit status.
python=$1
tests=$2
shift 2
if ! "$python" -c "import pytest" 2>/dev/null; then
  echo "python_tests: skipped: $python has no pytest (install python3-pytest)"
  exit 77
fi
exec "$python" -m pytest -q -p no:cacheprovider "$tests" "$@"

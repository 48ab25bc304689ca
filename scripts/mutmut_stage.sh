#!/bin/bash
# Mutation testing of python/keel with mutmut (make mutants-python). mutmut imports the mutated
# code from mutants/src, so it runs in a staging copy where the package sits at src/keel (the
# built native module included) and the Python tests at tests/python; results are printed and
# kept in target/mutmut (its mutants/ cache makes a re-run incremental).
# usage: scripts/mutmut_stage.sh MODULE.py [more.py ...]   (names inside python/keel)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VPY=${VPY:-$ROOT/.venv/bin/python}
STAGE=$ROOT/target/mutmut
mkdir -p "$STAGE/src" "$STAGE/tests"
rm -rf "$STAGE/src/keel" "$STAGE/tests/python"
cp -a "$ROOT/python/keel" "$STAGE/src/keel"
cp -a "$ROOT/tests/python" "$STAGE/tests/python"
only=$(printf '"src/keel/%s", ' "$@")
tests=()
for m in "$@"; do
  stem=${m%.py}; stem=${stem#_}
  for t in "$ROOT"/tests/python/test_${stem}*.py; do [ -e "$t" ] && tests+=("\"tests/python/$(basename "$t")\", "); done
done
cat > "$STAGE/pyproject.toml" <<TOML
[tool.mutmut]
source_paths = ["src/keel"]
only_mutate = [${only%, }]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider"]
pytest_add_cli_args_test_selection = [$(printf '%s' "${tests[@]}" | sed 's/, $//')]
TOML
cd "$STAGE"
"$VPY" -m mutmut run --max-children "${MUTMUT_JOBS:-2}" || true
"$VPY" -m mutmut results --all true > results.txt || true
"$VPY" - <<'PY'
import collections, re
counts = collections.Counter()
for line in open("results.txt"):
    m = re.match(r"\s*(\S+): (\w[\w ]*)$", line.rstrip())
    if m:
        counts[m.group(2)] += 1
total = sum(counts.values())
survived = counts.get("survived", 0) + counts.get("no tests", 0)
print(dict(counts))
if total:
    print(f"mutants {total}, killed {counts.get('killed', 0)}, surviving {survived} ({survived / total:.1%})")
PY

#!/usr/bin/env bash
# Writes constraints/constraints-<python>.txt the way Airflow makes its own: a fresh virtual
# environment, the whole package installed (`.[all]`), then `pip freeze` of what pip resolved.
# Production installs one part against it, so every part gets the versions tested together:
#   pip install "autopilot[airflow]" --constraint constraints/constraints-3.11.txt
# Usage: scripts/make_constraints.sh [python]   (default: python3.11; ~8 min on the loaded 2-core machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PY:-python3.11}}
version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
# A non-editable install from a copy: the freeze then names only released distributions.
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check ".[all]"
out="constraints/constraints-$version.txt"
mkdir -p constraints
{
  echo "# Constraints for autopilot $("$work/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("autopilot"))') on Python $version: \`pip freeze\` of a fresh \`pip install .[all]\`."
  echo "# Made by scripts/make_constraints.sh on $(date -u +%Y-%m-%d); use with any part:"
  echo "#   pip install \"autopilot[serving]\" --constraint $out"
  "$work/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude autopilot
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") pins)"

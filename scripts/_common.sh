# Sourced by the run-all scripts: which `entropice` to run, the grid levels, and a loop that
# names the level it is at and stops at the first failure.
#   ENTROPICE          the command (default: the repository's .venv/bin/entropice, else PATH)
#   ENTROPICE_LEVELS   grid levels, space separated (default: `entropice levels`, all nine)
#   ENTROPICE_DATA_DIR root of the storage hierarchy (default ./data), read by entropice itself
set -euo pipefail

_here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${ENTROPICE:-}" ]]; then
  if [[ -x "$_here/../.venv/bin/entropice" ]]; then
    ENTROPICE="$_here/../.venv/bin/entropice"
  else
    ENTROPICE=entropice
  fi
fi
if [[ -z "${ENTROPICE_LEVELS:-}" ]]; then
  ENTROPICE_LEVELS="$("$ENTROPICE" levels | tr '\n' ' ')"
fi

# for_each_level CMD...: run `CMD --grid-level LEVEL` for every level, in order.
for_each_level() {
  local level
  for level in $ENTROPICE_LEVELS; do
    echo "== $* --grid-level $level" >&2
    if ! "$@" --grid-level "$level"; then
      echo "$(basename "$0"): failed at grid level $level" >&2
      exit 1
    fi
  done
}

#!/usr/bin/env bash
# Run a command inside the workspace environment (scripts/env.sh), e.g. scripts/run_in_env.sh python -m pytest
set -eo pipefail
# shellcheck disable=SC1091
. "$(dirname "$0")/env.sh"
exec "$@"

#!/usr/bin/env bash
# Differential test against Foundry's cast (see diff_cast.mjs); TG_DIFF_N cases per group.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec node tests/integration/diff_cast.mjs

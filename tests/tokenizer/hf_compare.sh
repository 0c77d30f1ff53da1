#!/usr/bin/env bash
# hf_compare.sh TOKENIZER [--corpora]: our ids equal HuggingFace tokenizers' (npm
# @anush008/tokenizers) on the generated hard strings and, with --corpora, on every file in
# ../shared/corpora; decoding matches HF's decode. Skips (77) when the npm packages are absent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${RADLADS_BUILD:?RADLADS_BUILD must name the build folder}
tok=$1
skip() { echo "SKIP: $*"; exit 77; }
[ -f "$here/node_modules/@anush008/tokenizers/package.json" ] ||
  skip "tests/tokenizer/node_modules is missing; run tests/tokenizer/setup.sh (npm ci) to install the HF reference"
command -v node >/dev/null || skip "node is not installed (apt-get install nodejs)"
json=$tok
[ -d "$tok" ] && json=$tok/tokenizer.json
[ -f "$json" ] || skip "$json is missing; run tests/tokenizer/setup.sh"
corpora=()
if [ "${2:-}" = --corpora ]; then
  dir=${RADLADS_SRC:-$here/../..}/../shared/corpora
  if compgen -G "$dir/*.txt" >/dev/null; then
    corpora=("$dir"/*.txt)
  else
    echo "note: no corpora in $dir; comparing the generated strings only"
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node "$here/hf_expected.js" "$json" "$tmp/expected.json" "${corpora[@]}"
"$build/tests/tokenizer/tok_check" "$tok" "$tmp/expected.json"

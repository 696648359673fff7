"""Shared by the `reference` tokenizer checks (hf_tokenizers_check.py, sentencepiece_check.py, ../gguf/gguf_check.py):
the strings every tokenizer is compared on, and a runner for the engine's side (build/bin/tokenize_ids)."""
import json
import os
import random
import subprocess
import sys
import time


def text_lines(root):
    """Every non-empty line of resources/text/*.txt (the sample texts)."""
    d = os.path.join(root, "resources", "text")
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith(".txt"):
            with open(os.path.join(d, name), encoding="utf-8") as f:
                out += [l for l in f.read().split("\n") if l]
    if len(out) < 10:
        raise SystemExit(f"FAIL: only {len(out)} sample lines found in {d}")
    return out


# Edge strings (valid UTF-8). Special-token strings are in added_token_strings() (per tokenizer).
EDGE = [
    "", "a", " ", "  ", "   ", "          ", "Hello world", "Hello, world! 123abc", " leading space", "   three leading",
    "trailing   ", "a  b   c    d", "tabs\tand\t\tmore", "\t", "\t\t", " \t ", "new\nline", "a\n\nb\r\n c", "\n", "\n\n\n",
    " \n ", "  \n\n  x", "x \n", "\r\n", "\r\n\r\n", "\n \n  \n", "   \t  \n", "line one\n\nline two\n",
    "I'm you're we've he'll she'd it's they'RE DON'T", "''''", "'", "'s'", " 's", "'sun", "O'Neil's", "rock'n'roll",
    "'ſ 'K 'ſt", "12345678", "1234567890123", "12345 678 9 1234567", "3.14159, -42, 1e10", "99 bottles", "$100 & 50%",
    "café naïve résumé", "Ünïcödé ñ ÆØÅ", "日本語のテキストです。", "中文，标点！", "Καλημέρα κόσμε", "Привет, мир!",
    "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีครับ", "한국어 텍스트", "١٢٣ ٤٥٦", "Ⅻ ½ ² ①", "Hello世界мир123abcΩ",
    "e\u0301 combining", "a\u0308\u0301 stacked", "Zalgo: Z\u0351\u0364\u0357a\u0352\u0313l\u0307g\u0343o",
    "\u1100\u1161\u11a8 jamo", "A\u030a vs \u00c5 vs \u212b", "\ufb01 ligature", "a\u00a0b nbsp", "wide\u3000space",
    "line\u2028sep", "para\u2029sep", "nel\u0085char", "zero\u200bwidth", "soft\u00adhyphen", "\ufeffbom",
    "ctrl\x00\x01\x7f", "😀👍🏽 emoji 🎉!", "🇫🇷 flag", "👨\u200d👩\u200d👧 family", "❤\ufe0f", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "def f(x):\n    return x**2  # comment\n",
    "https://example.com/a?b=c&d=e#frag", "<html><body>hi</body></html>", "...!!!???", "--==++**", "MiXeD CaSe WoRdS",
    "e.g. i.e. etc.", "\"Quoted,\" she said.", "▁", "▁▁ mixed ▁", "<0x41>", "Once upon a time, there was a cat.",
    "  Lily  and  Tom  ", "\u200a hair space", "x" * 300, "ab " * 200,
]

# Random strings over characters that exercise every branch of the split regexes (fixed seed).
ALPHABET = [" ", " ", " ", "\n", "\r", "\t", "a", "b", "Z", "s", "t", "re", "ll", "'", "'", "1", "23", "4567",
            ".", ",", "!", "?", "-", "é", "ß", "Ж", "日", "한", "\u0301", "\u0903", "😀", "١", "½", "\u00a0", "\u3000",
            "\u2028", "\u0085", "\u200b", "\ufeff", "_", "$", "<", "|", "S", "D", "M", "VE", "ſ", "▁"]


def random_strings(n=400, seed=12345):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24))) for _ in range(n)]


# Invalid UTF-8 (bytes): lone continuation bytes, truncated sequences, overlong forms, surrogates, > U+10FFFF,
# bytes that never occur in UTF-8.
INVALID = [
    b"ok\xff\xc3 end\x80", b"\xff", b"\xfe\xff", b"\x80", b"\x80\x80\x80", b"abc\x80\x80\x80def", b"\xe2\x82",
    b"\xe2\x82A", b"\xe2\x82 word", b"hello \xf0\x9f\x98", b"\xf0\x9f\x98 x", b"a\xc0\x80b", b"\xc1\x81", b"A\xc1\x81A",
    b"x\xed\xa0\x80y", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80",
    b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b" \xff", b"'\xffs", b"'s\xff", b"12\xff34", b"\xff\n\n\xff", b"  \xff  ",
    b"\xe6\x97" + "本".encode(), "日".encode()[:1] + b" " + "日".encode()[1:], b"\xc3\xa9\xc3", b"\xc3(", b"a\xc3",
]


def random_invalid(n=60, seed=7):
    rng = random.Random(seed)
    pool = [b"a", b" ", b"\n", b"'", b"1", "é".encode(), "日".encode(), b"\xff", b"\x80", b"\xc3", b"\xe6\x97", b"s",
            b"\xf0\x9f", b"!", b"\t"]
    out = []
    while len(out) < n:
        s = b"".join(rng.choice(pool) for _ in range(rng.randint(1, 16)))
        try:
            s.decode("utf-8")
        except UnicodeDecodeError:
            out.append(s)
    return out


def escape_invalid(b):
    """bytes -> str with each byte that is not part of well-formed UTF-8 (Unicode's Table 3-7) as one lone surrogate
    U+DC80+byte (Python's surrogateescape: exactly one per ill-formed byte)."""
    return b.decode("utf-8", errors="surrogateescape")


def show(s, n=80):
    r = repr(s)
    return r if len(r) <= n else r[: n - 3] + "..."


class Tool:
    """build/bin/tokenize_ids: the engine's tokenizers on byte strings."""

    def __init__(self, exe):
        if not os.path.isfile(exe):
            raise SystemExit(f"FAIL: {exe} not found (build the tokenize_ids target)")
        self.exe = exe
        self.seconds = 0.0

    def run_jobs(self, jobs):
        """jobs: [(spec, strings, bos)], strings str or bytes; one tokenize_ids process for all of them.
        Returns [(header, [{"ids": [...], "decoded": bytes}, ...]), ...], one per job."""
        parts = []
        for spec, strings, bos in jobs:
            parts.append(f"@{spec}{' --bos' if bos else ''}\n")
            parts += [(s.encode("utf-8") if isinstance(s, str) else s).hex() + "\n" for s in strings]
        t0 = time.time()
        p = subprocess.run([self.exe], input="".join(parts).encode("utf-8"), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
        self.seconds += time.time() - t0
        if p.returncode != 0:
            raise SystemExit(f"FAIL: tokenize_ids exited {p.returncode}: {p.stderr.decode(errors='replace')}")
        lines = [l for l in p.stdout.decode("ascii").split("\n") if l]
        out, k = [], 0
        for spec, strings, _ in jobs:
            header = json.loads(lines[k])
            rows = [json.loads(l) for l in lines[k + 1:k + 1 + len(strings)]]
            k += 1 + len(strings)
            if len(rows) != len(strings) or "kind" not in header:
                raise SystemExit(f"FAIL: tokenize_ids {spec}: output does not match the input")
            for r in rows:
                r["decoded"] = bytes.fromhex(r["decoded"])
            out.append((header, rows))
        if k != len(lines):
            raise SystemExit("FAIL: tokenize_ids gave more output lines than inputs")
        return out

    def run(self, spec, strings, bos=False):
        return self.run_jobs([(spec, strings, bos)])[0]


class Jobs:
    """Collects (spec, strings, bos, callback(header, rows)) and runs them all in one tokenize_ids process."""

    def __init__(self):
        self.jobs, self.callbacks = [], []

    def add(self, spec, strings, bos, callback):
        self.jobs.append((spec, list(strings), bos))
        self.callbacks.append(callback)

    def run(self, tool):
        for cb, (header, rows) in zip(self.callbacks, tool.run_jobs(self.jobs)):
            cb(header, rows)


class Tally:
    """Counts comparisons per group and prints mismatches (the first few of each group)."""

    def __init__(self, show_max=8):
        self.groups = {}
        self.show_max = show_max
        self.failed = False

    def check(self, group, label, ours, want, extra=""):
        n, bad = self.groups.get(group, (0, 0))
        ok = list(ours) == list(want)
        self.groups[group] = (n + 1, bad + (0 if ok else 1))
        if not ok:
            self.failed = True
            if bad < self.show_max:
                print(f"MISMATCH [{group}] {label}\n    ours: {list(ours)}\n    want: {list(want)}{extra}")
        return ok

    def fail(self, msg):
        self.failed = True
        print("FAIL: " + msg)

    def report(self, title):
        total = sum(n for n, _ in self.groups.values())
        bad = sum(b for _, b in self.groups.values())
        print(f"\n{title}: {total} comparisons, {bad} mismatches")
        w = max((len(g) for g in self.groups), default=10)
        for g, (n, b) in self.groups.items():
            print(f"  {g:<{w}} {n:>7} compared  {b:>5} mismatches")
        if self.failed:
            print("RESULT: FAIL")
            sys.exit(1)
        print("RESULT: PASS")

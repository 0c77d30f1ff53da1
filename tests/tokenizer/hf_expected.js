// Writes the HuggingFace `tokenizers` reference ids for the tokenizer tests.
//   node hf_expected.js TOKENIZER_JSON OUT_JSON [CORPUS_FILE...]
// Cases: every corpus file whole, and a generated set of hard strings, each encoded twice:
// with special tokens recognised (HF's default) and with them as plain text (HF's behaviour when
// the special added tokens are absent, which is what radlads does without --special).
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require(path.join(__dirname, 'node_modules/@anush008/tokenizers'));

const [tokPath, outPath, ...corpora] = process.argv.slice(2);
if (!tokPath || !outPath) {
  console.error('usage: node hf_expected.js TOKENIZER_JSON OUT_JSON [CORPUS_FILE...]');
  process.exit(2);
}
const json = JSON.parse(fs.readFileSync(tokPath, 'utf8'));
const withSpecial = Tokenizer.fromFile(tokPath);
// Special tokens keep their ids (HF assigns added-token ids by position) but get contents that
// never occur in text, so they are never matched.
const plain = {
  ...json,
  added_tokens: (json.added_tokens || []).map((t, i) =>
    t.special ? { ...t, content: `\u0001radlads-disabled-${i}\u0001` } : t),
};
const withoutSpecial = Tokenizer.fromString(JSON.stringify(plain));
const specials = (json.added_tokens || []).filter((t) => t.special).map((t) => t.content);
const nonSpecials = (json.added_tokens || []).filter((t) => !t.special).map((t) => t.content);
const nfc = json.normalizer && JSON.stringify(json.normalizer).includes('"NFC"');
// decode(encode(x)) == normalize(x) holds unless a prefix space is added or tokens strip spaces.
const roundtrip = !JSON.stringify(json.pre_tokenizer || {}).includes('"add_prefix_space":true') &&
  !(json.added_tokens || []).some((t) => t.lstrip || t.rstrip);

// Deterministic PRNG (mulberry32) so the generated set is the same on every run.
let seed = 12345;
function rand() {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pick = (a) => a[Math.floor(rand() * a.length)];

const fixed = [
  '', ' ', '  ', '\n', '\r\n', '\r\n\r\n', 'a', 'Hello world', ' Hello  world ', 'hello\tworld\n',
  "I'm here, you're there, he's gone, we'll see, they'd know, I've been, it's OK",
  "DON'T SHOUT: I'LL, WE'VE, THEY'RE, SHE'S, 'S 'T 'Re 'vE 'M 'lL 'D",
  "'ſ 'ſt ſ long-s and Kelvin \u212A",
  '1234567890 12345678901234567890123 3.14159 -42 1,000,000 0x1F 1e-9 ٣٤٥ ૧૨૩ 二〇二四',
  'a'.repeat(1000), ' '.repeat(300) + 'x', '\t'.repeat(50) + '\n'.repeat(40) + ' \n \n',
  '9'.repeat(2000), 'ab1'.repeat(300), '!!!???...,,,;;;' + '-'.repeat(200),
  'Ünïcödé façade naïve coöperate résumé Straße ǅemal',
  'e\u0301 a\u0308 o\u0302\u0323 A\u030A \u1E0B\u0323 \u0071\u0307\u0323 \uAC00\u11A8 \u1100\u1161\u11A8',
  'Ελληνικά κείμενα, русский текст, українська, ქართული, Հայերեն, עברית, العربية, فارسی',
  'हिन्दी देवनागरी, বাংলা, தமிழ், తెలుగు, ಕನ್ನಡ, മലയാളം, ไทย ภาษาไทย, ລາວ, မြန်မာ, ខ្មែរ',
  '中文文本：你好，世界！日本語のテキスト、カタカナ、ひらがな。한국어 텍스트입니다.',
  '𠀀𠀁𪚥 𝕳𝖊𝖑𝖑𝖔 𝟘𝟙𝟚 \u{1F600}\u{1F601}',
  '👨‍👩‍👧‍👦 👩🏽‍💻 🏳️‍🌈 🇺🇳🇯🇵 ❤️ ✊🏿 🧑‍🤝‍🧑 1️⃣ #️⃣ 👍🏻👍🏼👍🏽👍🏾👍🏿',
  'zero\u200Bwidth\u200Cjoin\u200Dx\uFEFFbom\u00ADsoft\u2060wj',
  'nbsp\u00A0thin\u2009ideo\u3000line\u2028para\u2029nel\u0085mvs\u180Eogham\u1680end',
  'tabs\tand\u000Bvt\u000Cff\rcr\r\n\n\r',
  'int main(void) {\n    printf("%d\\n", x->y[3] << 2);\n    return 0; // done\n}\n',
  'def f(x):\n\tif x >= 10 and not y:\n\t\treturn {"a": [1, 2.5e-3]}\n\n\n',
  '<div class="x">&amp; &lt;tag&gt;</div> https://example.com/path?q=1&r=2#frag user@mail.org',
  '$$\\frac{a}{b}$$ `code` **bold** _it_ ~~s~~ | col | --- | ->> => := !== ===',
  '\uFFFD replacement \uFFFF\uFFFE nonchar',
  'mixed中文English한국어العربية123emoji😀end',
  // Long runs: one huge word, whitespace, newlines, digits (BPE heap and regex stack sizes).
  'x'.repeat(100000), ' '.repeat(50000) + 'y', '\n'.repeat(30000) + 'z', '\r\n'.repeat(20000),
  '5'.repeat(60000), 'ab '.repeat(30000), '中'.repeat(40000),
];

const cases = [];
function add(name, text) {
  cases.push({ name, text });
}
fixed.forEach((t, i) => add(`fixed_${i}`, t));
for (const s of [...specials.slice(0, 20), ...nonSpecials.slice(0, 12)]) {
  add(`token_whole ${s}`, s);
  add(`token_in_text ${s}`, `Hello${s}world ${s} x\n${s}${s}`);
  add(`token_partial ${s}`, s.slice(0, -1) + ' ' + s.slice(1) + s.slice(0, 3));
  add(`token_spaced ${s}`, `  ${s}  \n${s}\n`);
}
const frags = [
  ...fixed.slice(6, 40).map((s) => s.slice(0, 40)),
  ' ', '  ', '\n', '\r\n', '\t', "'s", "'LL", '0', '123456', '😀', '‍', '\u0301', '中', '。',
  'the', ' The', 'ing', '...', '"', "'", '(', ')', ...specials.slice(0, 4), ...nonSpecials.slice(0, 4),
  '<|', '|>', '<', 'é', 'e\u0301', 'ﬁ', 'Ⅻ', '①', '½',
];
for (let i = 0; i < 1500; i++) {
  const n = 1 + Math.floor(rand() * 12);
  let s = '';
  for (let j = 0; j < n; j++) s += pick(frags);
  add(`random_${i}`, s);
}
// Random code points from many blocks, to shake out regex class differences.
const blocks = [[0x20, 0x7f], [0xa0, 0x250], [0x300, 0x370], [0x370, 0x530], [0x590, 0x700],
  [0x900, 0xe00], [0x1100, 0x1200], [0x1680, 0x1700], [0x1800, 0x1900], [0x2000, 0x2070],
  [0x2100, 0x2400], [0x3000, 0x3100], [0x4e00, 0x4f00], [0xac00, 0xad00], [0xfe00, 0xff00],
  [0x1f300, 0x1f700], [0x1d400, 0x1d800]];
for (let i = 0; i < 400; i++) {
  let s = '';
  const n = 1 + Math.floor(rand() * 20);
  for (let j = 0; j < n; j++) {
    const [lo, hi] = pick(blocks);
    const cp = lo + Math.floor(rand() * (hi - lo));
    if (cp >= 0xd800 && cp < 0xe000) continue;
    s += String.fromCodePoint(cp);
  }
  add(`codepoints_${i}`, s);
}

(async () => {
  const out = [];
  for (const c of cases) {
    for (const special of [true, false]) {
      const tk = special ? withSpecial : withoutSpecial;
      const enc = await tk.encode(c.text, null, { addSpecialTokens: false });
      const ids = enc.getIds();
      const rec = { name: c.name, text: c.text, special, ids };
      const dec = await withSpecial.decode(ids, false);
      rec.decoded = dec;
      out.push(rec);
    }
  }
  for (const f of corpora) {
    const text = fs.readFileSync(f, 'utf8');
    const enc = await withSpecial.encode(text, null, { addSpecialTokens: false });
    const ids = enc.getIds();
    const rec = { name: path.basename(f), file: f, special: true, ids };
    const norm = nfc ? text.normalize('NFC') : text;
    rec.decoded_equals_normalized = (await withSpecial.decode(ids, false)) === norm;
    out.push(rec);
  }
  for (const r of out) if (r.text !== undefined && nfc) r.normalized = r.text.normalize('NFC');
  fs.writeFileSync(outPath, JSON.stringify({ tokenizer: tokPath, nfc: !!nfc, roundtrip, cases: out }));
  console.log(`hf_expected: ${out.length} cases from ${tokPath}`);
})().catch((e) => {
  console.error('hf_expected:', e);
  process.exit(1);
});

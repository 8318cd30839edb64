// The llama.cpp peer of bench/llm_bench (docs/performance.md, "LLM engine"): generated tokens/s
// at 1 and N parallel sequences of llama.cpp (the prebuilt CPU build that npm's
// node-llama-cpp@3.21.1 installs) on a GGUF of the same random checkpoint
// (tools/gguf-writer). Dev-only, never in CI: node-llama-cpp is not a project dependency.
//
//   npm install --prefix /tmp/llamacpp-peer node-llama-cpp@3.21.1
//   build/bin/llm_bench --dtype bfloat16 --repeats 1 --keep --dir /tmp/smollm2  # the checkpoint
//   /usr/bin/python3 tools/gguf-writer/gguf_writer.py /tmp/smollm2 /tmp/smollm2-f32.gguf --type f32
//   NODE_PATH=/tmp/llamacpp-peer/node_modules node bench/llamacpp_bench.mjs \
//       --model /tmp/smollm2-f32.gguf [--prompt 16] [--tokens 16] [--streams 16] \
//       [--repeats 3] [--threads 2]
//
// As llm_bench: each request is a --prompt-token prompt (the same ids, prompt i salted by i),
// greedy (temperature 0), exactly --tokens generated tokens (no stop token: the ids are fed and
// read, never detokenized), all N submitted at once; tokens/s = all generated tokens over the
// wall time from the first submit to the last token. node-llama-cpp batches the parallel
// sequences' tokens into one llama_decode per step.
import {createRequire} from "node:module";
import path from "node:path";
import process from "node:process";

// NODE_PATH does not apply to ES module imports: resolve the package from it by hand.
const require = createRequire(path.join(process.env.NODE_PATH ?? process.cwd(), "x.js"));
const {getLlama, LlamaLogLevel} = await import(require.resolve("node-llama-cpp"));

function flag(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}
const modelPath = flag("model");
const promptLen = Number(flag("prompt", 16));
const tokens = Number(flag("tokens", 16));
const streams = Number(flag("streams", 16));
const repeats = Number(flag("repeats", 3));
const threads = Number(flag("threads", 2));
if (!modelPath || !(promptLen >= 1 && tokens >= 2 && streams >= 1 && streams <= 256 &&
                    repeats >= 1 && repeats <= 50 && threads >= 1)) {
  console.error("usage: llamacpp_bench.mjs --model F.gguf [--prompt N] [--tokens N] " +
                "[--streams 1..256] [--repeats 1..50] [--threads N]");
  process.exit(1);
}

// llm_bench's Prompt(): (i * 7919 + salt * 104729 + 3) % vocab.
function prompt(vocab, salt) {
  const p = [];
  for (let i = 0; i < promptLen; ++i) p.push((i * 7919 + salt * 104729 + 3) % vocab);
  return p;
}

const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error,
                              maxThreads: threads});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const vocab = model.fileInsights.vocabularySize ?? model.fileInfo.metadata.llama.vocab_size;

// One context per stream count, sized for its sequences; `n` sequences run at once.
async function run(n) {
  const context = await model.createContext({
    sequences: n, contextSize: n * (promptLen + tokens + 16), batchSize: 512, threads,
    flashAttention: false});
  const seqs = Array.from({length: n}, () => context.getSequence());
  const results = [];
  for (let r = 0; r <= repeats; ++r) {  // round 0 warms up and is not counted
    for (const seq of seqs) await seq.clearHistory();
    const start = performance.now();
    const ttft = [];
    const first = [];
    const counts = await Promise.all(seqs.map(async (seq, i) => {
      let count = 0;
      for await (const token of seq.evaluate(prompt(vocab, i), {temperature: 0})) {
        if (count === 0) ttft.push(performance.now() - start);
        if (i === 0 && first.length < 8) first.push(token);
        if (++count >= tokens) break;
      }
      return count;
    }));
    const wall = performance.now() - start;
    if (r === 0) continue;
    const total = counts.reduce((a, b) => a + b, 0);
    ttft.sort((a, b) => a - b);
    results.push({tps: 1000 * total / wall, ttft: ttft[Math.floor(ttft.length / 2)], first});
  }
  await context.dispose();
  const med = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return {tps: med(results.map((x) => x.tps)), ttft: med(results.map((x) => x.ttft)),
          rounds: results.map((x) => x.tps.toFixed(1)).join(" "), first: results[0].first};
}

const one = await run(1);
const many = await run(streams);
console.log(`# llama.cpp (node-llama-cpp prebuilt CPU, ${threads} threads) on ` +
            `${path.basename(modelPath)}: prompt ${promptLen}, ${tokens} tokens per request, ` +
            `${repeats} round(s)\n`);
console.log("| sequences | tokens/s (median) | TTFT p50 ms | per round |\n|---|---|---|---|");
console.log(`| 1 | ${one.tps.toFixed(1)} | ${one.ttft.toFixed(1)} | ${one.rounds} |`);
console.log(`| ${streams} | ${many.tps.toFixed(1)} | ${many.ttft.toFixed(1)} | ${many.rounds} |`);
console.log(`\n${streams} / 1 sequences: ${(many.tps / one.tps).toFixed(2)}x tokens/s; ` +
            `greedy tokens of sequence 0: ${one.first.join(" ")} ... (compare llm_bench's)`);
await model.dispose();
await llama.dispose();

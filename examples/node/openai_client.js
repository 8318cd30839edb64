#!/usr/bin/env node
// The official `openai` npm package, unchanged, against a switchyard-gateway's OpenAI-compatible
// HTTP API (docs/openai-api.md): only the base URL points at the gateway.
//
//   node examples/node/openai_client.js --base-url http://127.0.0.1:8935/v1 --model my-llm
//
// Lists the models, asks for one chat completion, streams another (with the usage chunk), asks
// for one text completion, then makes a request the gateway must refuse (an unknown model) and
// checks the error the library throws. Exits 0 when all of it went as expected, 1 when a call
// failed or an answer was not what it should be, 2 on bad usage.
'use strict';

const OpenAI = require('openai');

const USAGE = `usage: node openai_client.js [--base-url URL] [--api-key KEY] [--model ID]
       [--prompt TEXT] [--max-tokens N] [--timeout S]`;

const OPTIONS = {
  'base-url': process.env.OPENAI_BASE_URL || 'http://127.0.0.1:8935/v1',
  // The gateway's API key when it has keys configured; any text otherwise.
  'api-key': process.env.OPENAI_API_KEY || 'none',
  'model': undefined,
  'prompt': 'Hello!',
  'max-tokens': '64',
  'timeout': '60',
};

function parseCommandLine(argv) {
  const values = { ...OPTIONS, help: false };
  for (let i = 0; i < argv.length; ++i) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      values.help = true;
      continue;
    }
    const match = /^--([a-z-]+)(?:=(.*))?$/s.exec(arg);
    if (match === null || !Object.prototype.hasOwnProperty.call(OPTIONS, match[1])) {
      throw new Error(`unknown option '${arg}'`);
    }
    let value = match[2];
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`option '${arg}' needs a value`);
      value = argv[++i];
    }
    values[match[1]] = value;
  }
  return values;
}

function check(condition, what) {
  if (!condition) throw new Error(`unexpected answer: ${what}`);
}

async function main(args) {
  const client = new OpenAI({
    baseURL: args['base-url'],
    apiKey: args['api-key'],
    timeout: Number(args.timeout) * 1000,
    maxRetries: 0,  // a failure is reported, not hidden behind retries
  });
  const model = args.model;
  const maxTokens = Number(args['max-tokens']);

  // GET /v1/models: the llm models some orchestrator offers.
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  console.log(`models: ${ids.join(' ')}`);
  check(ids.includes(model), `${model} is not in /v1/models`);

  // A chat completion, in one piece.
  const messages = [{ role: 'user', content: args.prompt }];
  const chat = await client.chat.completions.create(
      { model, messages, max_tokens: maxTokens, temperature: 0 });
  check(chat.object === 'chat.completion', `object ${chat.object}`);
  check(chat.id.startsWith('chatcmpl-'), `id ${chat.id}`);
  const answer = chat.choices[0].message.content;
  console.log(`chat: ${answer}`);
  console.log(`chat finish_reason: ${chat.choices[0].finish_reason}`);
  console.log(`chat usage: prompt ${chat.usage.prompt_tokens} completion ` +
              `${chat.usage.completion_tokens} total ${chat.usage.total_tokens}`);

  // The same, streamed, with the usage chunk at the end.
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: maxTokens, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  });
  let streamed = '';
  let chunks = 0;
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    check(chunk.object === 'chat.completion.chunk', `chunk object ${chunk.object}`);
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      streamed += choice.delta.content || '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
    ++chunks;
  }
  console.log(`chat stream: ${streamed} (${chunks} chunks, finish_reason ${finish})`);
  check(streamed === answer, 'the streamed text differs from the one-piece answer');
  check(usage !== null, 'no usage chunk');
  console.log(`chat stream usage: prompt ${usage.prompt_tokens} completion ` +
              `${usage.completion_tokens} total ${usage.total_tokens}`);

  // A text completion of a raw prompt (no chat template).
  const completion = await client.completions.create(
      { model, prompt: args.prompt, max_tokens: maxTokens, temperature: 0 });
  check(completion.object === 'text_completion', `object ${completion.object}`);
  console.log(`completion: ${completion.choices[0].text}`);
  console.log(`completion finish_reason: ${completion.choices[0].finish_reason}`);

  // A model nobody offers: the library throws an APIError with the gateway's status and message.
  try {
    await client.chat.completions.create({ model: 'no-such-model', messages });
    throw new Error('unexpected answer: no error for an unknown model');
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    console.log(`error case: ${err.status} ${err.code} ${err.message}`);
    check(err.status === 404, `status ${err.status}`);
    check(err.code === 'model_not_found', `code ${err.code}`);
    check(err.message.includes('no-such-model'), `message ${err.message}`);
  }
}

let args;
try {
  args = parseCommandLine(process.argv.slice(2));
  if (!args.help && args.model === undefined) throw new Error('--model is required');
} catch (err) {
  console.error(`error: ${err.message}\n${USAGE}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
main(args).then(() => console.log('ok'), (err) => {
  const status = err instanceof OpenAI.APIError ? ` (HTTP ${err.status})` : '';
  console.error(`error${status}: ${err.message}`);
  process.exit(1);
});

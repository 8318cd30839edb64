#!/usr/bin/env node
// Example Switchyard client in Node.js (@grpc/grpc-js + @grpc/proto-loader, `npm ci` here first).
//
// Lists the cluster's capabilities, upscales an image and streams one LLM completion through a
// switchyard-gateway's public gRPC API. The proto (proto/switchyard/v1/gateway.proto) is loaded
// at run time; nothing is generated.
//
//   node examples/node/client.js --gateway 127.0.0.1:50051 \
//       --upscale-model esrgan-slim-x4 --image in.png --out out.png \
//       --llm-model my-llm --prompt "Hello"
//
// Exits 0 on success, 1 when a call fails (the gRPC status is printed), 2 on bad usage.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const USAGE = `usage: node client.js [--gateway HOST:PORT] [--proto-root DIR] [--timeout S]
       [--upscale-model ID] [--image IN.png] [--out OUT.png]
       [--llm-model ID] [--prompt TEXT] [--max-tokens N] [--temperature T]`;

const OPTIONS = {
  'gateway': process.env.SWITCHYARD_GATEWAY || '127.0.0.1:50051',
  'proto-root': path.join(__dirname, '..', '..', 'proto'),
  'timeout': '60',
  'upscale-model': 'esrgan-slim-x4',
  'image': undefined,
  'out': 'upscaled.png',
  'llm-model': undefined,
  'prompt': 'Hello!',
  'max-tokens': '64',
  'temperature': undefined,
};

// --name VALUE or --name=VALUE for the OPTIONS above, and --help. (A few lines instead of
// util.parseArgs, which is still experimental in Node 18, Debian 12's version.)
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

class UsageError extends Error {}

// A promise for one unary call with a deadline and the request id metadata.
function unary(stub, method, request, opts) {
  return new Promise((resolve, reject) => {
    stub[method](request, opts.metadata, { deadline: Date.now() + opts.timeoutMs },
      (err, response) => (err ? reject(err) : resolve(response)));
  });
}

// Streams an LLM completion, writing each token to stdout as it arrives; resolves to the last
// message (the one with usage and job).
function llmStream(stub, request, opts) {
  return new Promise((resolve, reject) => {
    const call = stub.LLM(request, opts.metadata, { deadline: Date.now() + opts.timeoutMs });
    let last = null;
    call.on('data', (message) => {
      for (const choice of message.choices) process.stdout.write(choice.delta.content);
      last = message;
    });
    call.on('error', reject);
    call.on('end', () => resolve(last));
  });
}

async function main() {
  let args;
  try {
    args = parseCommandLine(process.argv.slice(2));
  } catch (e) {
    throw new UsageError(`${e.message}\n${USAGE}`);
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const timeoutMs = Number(args.timeout) * 1000;
  const maxTokens = Number(args['max-tokens']);
  if (!(timeoutMs > 0)) throw new UsageError('--timeout must be a positive number of seconds');
  if (!Number.isInteger(maxTokens) || maxTokens <= 0) {
    throw new UsageError('--max-tokens must be a positive integer');
  }
  const temperature = args.temperature === undefined ? undefined : Number(args.temperature);
  if (temperature !== undefined && !(temperature >= 0)) {
    throw new UsageError('--temperature must be a number >= 0');
  }
  if (args.image !== undefined && !fs.existsSync(args.image)) {
    throw new UsageError(`--image '${args.image}' does not exist`);
  }
  const protoFile = path.join(args['proto-root'], 'switchyard', 'v1', 'gateway.proto');
  if (!fs.existsSync(protoFile)) throw new UsageError(`${protoFile} not found (--proto-root)`);

  const definition = protoLoader.loadSync(protoFile, {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const { Gateway } = grpc.loadPackageDefinition(definition).switchyard.v1;
  // Media travel inline, so allow large messages.
  const stub = new Gateway(args.gateway, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 256 << 20,
    'grpc.max_send_message_length': 256 << 20,
  });
  const requestId = crypto.randomBytes(16).toString('hex');
  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', requestId);
  const opts = { metadata, timeoutMs };

  try {
    // 1. What the cluster offers.
    const caps = await unary(stub, 'ListCapabilities', {}, opts);
    console.log(`capabilities (${caps.orchestrators.length} orchestrators):`);
    for (const c of caps.capabilities) {
      console.log(`  ${c.pipeline.padEnd(20)} ${c.model_id.padEnd(24)} warm on ` +
                  `${c.warm_orchestrators}/${c.orchestrators}, capacity ${c.capacity}`);
    }

    // 2. An upscale.
    if (args.image !== undefined) {
      const start = Date.now();
      const resp = await unary(stub, 'Upscale', {
        model_id: args['upscale-model'], image: fs.readFileSync(args.image),
      }, opts);
      if (resp.images.length === 0) throw new Error('the gateway returned no image');
      const image = resp.images[0];
      fs.writeFileSync(args.out, image.data);
      console.log(`upscale: ${args.out} ${image.width}x${image.height} on ` +
                  `${resp.job.orchestrator} in ${Date.now() - start} ms`);
    }

    // 3. An LLM completion, printed token by token as it streams.
    if (args['llm-model'] !== undefined) {
      process.stdout.write('llm: ');
      const request = {
        model: args['llm-model'], max_tokens: maxTokens,
        messages: [{ role: 'user', content: args.prompt }],
      };
      // Unset, the gateway's default applies (proto3 optional: absent, not 0).
      if (temperature !== undefined) request.temperature = temperature;
      const last = await llmStream(stub, request, opts);
      process.stdout.write('\n');
      if (last === null) throw new Error('the LLM stream was empty');
      const u = last.usage;
      console.log(`llm usage: prompt ${u.prompt_tokens}, completion ${u.completion_tokens}, ` +
                  `total ${u.total_tokens} on ${last.job.orchestrator}`);
    }
  } catch (e) {
    if (e.code !== undefined && grpc.status[e.code] !== undefined) {
      console.error(`error: ${grpc.status[e.code]}: ${e.details}`);
    } else {
      console.error(`error: ${e.message}`);
    }
    console.error(`request id: ${requestId}`);
    return 1;
  } finally {
    stub.close();
  }
  return 0;
}

main().then((code) => { process.exitCode = code; }, (e) => {
  console.error(`error: ${e.message}`);
  process.exitCode = e instanceof UsageError ? 2 : 1;
});

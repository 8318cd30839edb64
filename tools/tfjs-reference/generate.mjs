// Regenerates the TF.js reference fixtures in tests/fixtures/ (see README.md).
//
//   node generate.mjs [--model-dir DIR] [--out-root DIR] [KEY ...]
//
// KEY is one of esrgan-slim, upscalerjs-default, esrgan-medium, esrgan-thick (default: all four).
// Each package is read from DIR/<extract dir>/package as extracted by scripts/prepare-models
// (DIR defaults to <repo>/models); fixtures go to OUT_ROOT/<fixture dir> (default
// <repo>/tests/fixtures). Uses the pure-JS CPU backend of @tensorflow/tfjs; files are read with fs
// and handed to tf.loadLayersModel through tf.io.fromMemory (no fetch, no file:// URLs).
//
// The package's own model definition (its CommonJS build in dist/cjs) supplies the scale, the
// value range the model works in (inputRange/outputRange) and, for esrgan-thick, the custom
// layers (MultiplyBeta, PixelShuffle<S>x), registered with its setup(tf) exactly as UpscalerJS
// does. Input and output are fixed at 0..255: the input is mapped into inputRange before predict
// and the output from outputRange back to 0..255 (unclamped), which is the contract the
// converted TorchScript module follows.
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import {createRequire} from 'node:module';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

// key -> npm package, folder made by scripts/prepare-models, fixture folder, input size, and
// per scale: model.json inside the package + the CommonJS model definition.
// esrgan-slim keeps its original 10x12 input; the newer fixtures use 6x8 to stay small
// (esrgan-medium and esrgan-thick have four scales each; x8 of 10x12 alone is 92 KB).
const PACKAGES = {
  'esrgan-slim': {
    npm: '@upscalerjs/esrgan-slim@1.0.0', dir: 'esrgan-slim-1.0.0', out: 'esrgan',
    height: 10, width: 12,
    models: [2, 3, 4, 8].map((s) => ({
      scale: s, json: `models/x${s}/model.json`,
      definition: `dist/cjs/models/esrgan-slim/src/x${s}/cjs.js`,
    })),
  },
  'upscalerjs-default': {
    npm: '@upscalerjs/default-model@1.0.0', dir: 'upscalerjs-default-1.0.0',
    out: 'upscalerjs-default', height: 6, width: 8,
    models: [{scale: 2, json: 'models/model.json',
              definition: 'dist/cjs/models/default-model/src/cjs.js'}],
  },
  'esrgan-medium': {
    npm: '@upscalerjs/esrgan-medium@1.0.0', dir: 'esrgan-medium-1.0.0', out: 'esrgan-medium',
    height: 6, width: 8,
    models: [2, 3, 4, 8].map((s) => ({
      scale: s, json: `models/x${s}/model.json`,
      definition: `dist/cjs/models/esrgan-medium/src/x${s}/cjs.js`,
    })),
  },
  'esrgan-thick': {
    npm: '@upscalerjs/esrgan-thick@1.0.0', dir: 'esrgan-thick-1.0.0', out: 'esrgan-thick',
    height: 6, width: 8,
    models: [2, 3, 4, 8].map((s) => ({
      scale: s, json: `models/x${s}/model.json`,
      definition: `dist/cjs/models/esrgan-thick/src/x${s}/cjs.js`,
    })),
  },
};

function parseArgs(argv) {
  const args = {modelDir: path.join(repo, 'models'), outRoot: path.join(repo, 'tests', 'fixtures'),
                keys: []};
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a === '--model-dir' && i + 1 < argv.length) args.modelDir = path.resolve(argv[++i]);
    else if (a === '--out-root' && i + 1 < argv.length) args.outRoot = path.resolve(argv[++i]);
    else if (PACKAGES[a]) args.keys.push(a);
    else throw new Error(`unknown argument ${a} (keys: ${Object.keys(PACKAGES).join(', ')})`);
  }
  if (args.keys.length === 0) args.keys = Object.keys(PACKAGES);
  return args;
}

// Deterministic input image: height x width RGB, uint8, HWC order.
const FORMULA = '(x * 37 + y * 61 + c * 97 + x * y * 13) % 256';
function inputValue(y, x, c) {
  return (x * 37 + y * 61 + c * 97 + x * y * 13) % 256;
}

async function loadModel(modelJsonPath) {
  const dir = path.dirname(modelJsonPath);
  const json = JSON.parse(fs.readFileSync(modelJsonPath, 'utf8'));
  const weightSpecs = [];
  const buffers = [];
  for (const group of json.weightsManifest) {
    weightSpecs.push(...group.weights);
    for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
  }
  const all = Buffer.concat(buffers);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return tf.loadLayersModel(
      tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs, weightData}));
}

function writeJson(file, obj) {
  fs.writeFileSync(file, JSON.stringify(obj, null, 2) + '\n');
}

// Maps a tensor linearly from range `from` to range `to` ([lo, hi] pairs).
function remap(t, from, to) {
  if (from[0] === to[0] && from[1] === to[1]) return t.clone();
  const k = (to[1] - to[0]) / (from[1] - from[0]);
  return tf.tidy(() => t.sub(from[0]).mul(k).add(to[0]));
}

async function generate(key, spec, modelDir, outRoot) {
  const packageDir = path.join(modelDir, spec.dir, 'package');
  const outDir = path.join(outRoot, spec.out);
  if (!fs.existsSync(packageDir)) {
    throw new Error(`${packageDir} missing: run scripts/prepare-models --models ${key}`);
  }
  fs.mkdirSync(outDir, {recursive: true});
  const {height, width} = spec;
  const pixels = new Uint8Array(height * width * 3);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x)
      for (let c = 0; c < 3; ++c) pixels[(y * width + x) * 3 + c] = inputValue(y, x, c);
  fs.writeFileSync(path.join(outDir, 'input.u8'), pixels);
  writeJson(path.join(outDir, 'input.json'), {
    file: 'input.u8', dtype: 'uint8', layout: 'HWC', shape: [height, width, 3], formula: FORMULA,
  });

  for (const m of spec.models) {
    const definition = require(path.join(packageDir, m.definition));
    if (definition.scale !== m.scale) {
      throw new Error(`${m.definition}: scale ${definition.scale}, expected ${m.scale}`);
    }
    if (typeof definition.setup === 'function') await definition.setup(tf);
    const inputRange = definition.inputRange ?? [0, 255];
    const outputRange = definition.outputRange ?? [0, 255];
    const model = await loadModel(path.join(packageDir, m.json));
    const raw = tf.tensor4d(Float32Array.from(pixels), [1, height, width, 3], 'float32');
    const input = remap(raw, [0, 255], inputRange);
    const predicted = model.predict(input);
    const output = remap(predicted, outputRange, [0, 255]);
    const data = await output.data();  // Float32Array, NHWC
    const le = Buffer.alloc(data.length * 4);
    data.forEach((v, i) => le.writeFloatLE(v, i * 4));
    const name = `x${m.scale}`;
    fs.writeFileSync(path.join(outDir, `${name}.f32`), le);
    const header = {
      file: `${name}.f32`, dtype: 'float32', byte_order: 'little', layout: 'NHWC',
      shape: output.shape, scale: m.scale, input: 'input.json',
      model: `${spec.npm} ${m.json}`,
      generator: `tools/tfjs-reference/generate.mjs, @tensorflow/tfjs ${tf.version.tfjs}, cpu backend`,
    };
    if (inputRange[1] !== 255 || outputRange[1] !== 255) {
      header.model_range = {input: inputRange, output: outputRange,
                            note: 'input mapped from 0..255, output mapped back to 0..255'};
    }
    writeJson(path.join(outDir, `${name}.json`), header);
    let min = Infinity, max = -Infinity;
    for (const v of data) { min = Math.min(min, v); max = Math.max(max, v); }
    console.log(`${key} ${name}: output ${JSON.stringify(output.shape)} range ` +
                `[${min.toFixed(2)}, ${max.toFixed(2)}] (model range in ${JSON.stringify(inputRange)}` +
                ` out ${JSON.stringify(outputRange)})`);
    tf.dispose([raw, input, predicted, output]);
    model.dispose();
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  await tf.setBackend('cpu');
  await tf.ready();
  for (const key of args.keys) await generate(key, PACKAGES[key], args.modelDir, args.outRoot);
}

main().catch((e) => { console.error(e); process.exit(1); });

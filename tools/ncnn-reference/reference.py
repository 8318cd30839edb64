#!/usr/bin/python3
"""Independent NumPy reference for switchyard's ncnn and waifu2x converters.

No ncnn runtime (and no Torch7 for waifu2x) is reachable here, so this re-implements, from ncnn's
and waifu2x's sources, what the original runtimes compute, without libtorch: it reads the .param,
.bin and JSON files itself and runs the layers with NumPy in float64. It writes the fixtures that
tests/runner/ncnn_converter_test.cc and waifu2x_converter_test.cc compare the converted
TorchScript modules against. See README.md here.

Usage (Debian's python3-numpy and python3-pil):
  /usr/bin/python3 tools/ncnn-reference/reference.py --model-dir models --photo chelsea.png
"""

import argparse
import hashlib
import json
import os
import struct
import sys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

# --- ncnn .param --------------------------------------------------------------------------


def parse_param(path):
    """Returns [(type, name, bottoms, tops, {id: value})]; arrays as lists."""
    with open(path) as f:
        lines = [ln.split() for ln in f if ln.strip()]
    assert lines[0] == ["7767517"], "not an ncnn text .param"
    layer_count, _ = int(lines[1][0]), int(lines[1][1])
    layers = []
    for tok in lines[2:]:
        ltype, name, nb, nt = tok[0], tok[1], int(tok[2]), int(tok[3])
        bottoms = tok[4:4 + nb]
        tops = tok[4 + nb:4 + nb + nt]
        params = {}
        for kv in tok[4 + nb + nt:]:
            k, v = kv.split("=", 1)
            k = int(k)
            if k <= -23300:
                items = v.split(",")
                assert int(items[0]) == len(items) - 1
                params[-k - 23300] = [float(x) for x in items[1:]]
            elif any(c in v for c in ".eE"):
                params[k] = float(v)
            else:
                params[k] = int(v)
        layers.append((ltype, name, bottoms, tops, params))
    assert len(layers) == layer_count
    return layers


class Bin:
    """ncnn's ModelBinFromDataReader: type-0 blobs have a 4-byte tag, type-1 are raw float32."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.data = f.read()
        self.pos = 0

    def tagged(self, n):
        (tag,) = struct.unpack_from("<I", self.data, self.pos)
        self.pos += 4
        if tag == 0x01306B47:  # float16, padded to 4 bytes
            v = np.frombuffer(self.data, dtype="<f2", count=n, offset=self.pos)
            self.pos += (2 * n + 3) // 4 * 4
            return v.astype(np.float64)
        assert tag == 0, "unsupported tag %x" % tag
        return self.raw(n)

    def raw(self, n):
        v = np.frombuffer(self.data, dtype="<f4", count=n, offset=self.pos)
        self.pos += 4 * n
        return v.astype(np.float64)


# --- layers (blobs are [C, H, W] float64, like ncnn's 3-D Mat) -------------------------------


def conv2d(x, w, b, pad=(0, 0, 0, 0), dilation=1):
    """Cross-correlation, stride 1; w [O, C, kh, kw]; pad (left, right, top, bottom)."""
    left, right, top, bottom = pad
    x = np.pad(x, ((0, 0), (top, bottom), (left, right)))
    o, c, kh, kw = w.shape
    eff_h, eff_w = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    win = sliding_window_view(x, (eff_h, eff_w), axis=(1, 2))[:, :, :, ::dilation, ::dilation]
    y = np.einsum("chwij,ocij->ohw", win, w, optimize=True)
    if b is not None:
        y += b[:, None, None]
    return y


def pixel_shuffle_ncnn(x, r):
    """ncnn PixelShuffle mode 0, written as its loops: out[p, i*r+sh, j*r+sw] = in[q, i, j]
    with q = p*r*r + sh*r + sw."""
    c, h, w = x.shape
    outc = c // (r * r)
    y = np.empty((outc, h * r, w * r))
    for p in range(outc):
        for sh in range(r):
            for sw in range(r):
                q = p * r * r + sh * r + sw
                y[p, sh::r, sw::r] = x[q]
    return y


def interp_nearest_ncnn(x, hscale, wscale):
    c, h, w = x.shape
    outh, outw = int(np.float32(h) * np.float32(hscale)), int(np.float32(w) * np.float32(wscale))
    hs, ws = np.float32(1.0) / np.float32(hscale), np.float32(1.0) / np.float32(wscale)
    iy = np.minimum((np.arange(outh, dtype=np.float32) * hs).astype(np.int64), h - 1)
    ix = np.minimum((np.arange(outw, dtype=np.float32) * ws).astype(np.int64), w - 1)
    return x[:, iy][:, :, ix]


def cubic_coeffs_ncnn(w, outw):
    """ncnn interp.cpp cubic_coeffs (align_corner 0): source index and 4 weights per output
    pixel, including ncnn's folding of out-of-image taps into the edge ones."""
    A = -0.75
    scale = w / outw
    xofs = np.zeros(outw, dtype=np.int64)
    alpha = np.zeros((outw, 4))
    for dx in range(outw):
        fx = float(np.float32((dx + 0.5) * scale - 0.5))
        sx = int(np.floor(fx))
        fx = float(np.float32(fx - sx))
        fx0, fx1, fx2 = fx + 1, fx, 1 - fx
        a = [A * fx0 ** 3 - 5 * A * fx0 ** 2 + 8 * A * fx0 - 4 * A,
             (A + 2) * fx1 ** 3 - (A + 3) * fx1 ** 2 + 1,
             (A + 2) * fx2 ** 3 - (A + 3) * fx2 ** 2 + 1]
        a.append(1 - a[0] - a[1] - a[2])
        if sx <= -1:
            sx = 1
            a = [1 - a[3], a[3], 0.0, 0.0]
        if sx == 0:
            sx = 1
            a = [a[0] + a[1], a[2], a[3], 0.0]
        if sx == w - 2:
            sx = w - 3
            a = [0.0, a[0], a[1], a[2] + a[3]]
        if sx >= w - 1:
            sx = w - 3
            a = [0.0, 0.0, a[0], 1 - a[0]]
        xofs[dx] = sx
        alpha[dx] = a
    return xofs, alpha


def interp_bicubic_ncnn(x, hscale, wscale):
    c, h, w = x.shape
    outh, outw = int(np.float32(h) * np.float32(hscale)), int(np.float32(w) * np.float32(wscale))
    xofs, alpha = cubic_coeffs_ncnn(w, outw)
    yofs, beta = cubic_coeffs_ncnn(h, outh)
    # Horizontal pass: taps sx-1..sx+2.
    rows = np.zeros((c, h, outw))
    for k in range(4):
        rows += x[:, :, xofs + k - 1] * alpha[:, k][None, None, :]
    out = np.zeros((c, outh, outw))
    for k in range(4):
        out += rows[:, yofs + k - 1, :] * beta[:, k][None, :, None]
    return out


def run_ncnn(param_path, bin_path, image01):
    layers = parse_param(param_path)
    wb = Bin(bin_path)
    blobs = {}
    for ltype, name, bottoms, tops, p in layers:
        ins = [blobs[b] for b in bottoms]
        if ltype == "Input":
            out = image01
        elif ltype == "Split":
            for t in tops:
                blobs[t] = ins[0]
            continue
        elif ltype == "Convolution":
            num_output, k = p[0], p[1]
            assert p.get(11, k) == k and p.get(3, 1) == 1 and p.get(8, 0) == 0
            pad = p.get(4, 0)
            cin = p[6] // (num_output * k * k)
            w = wb.tagged(p[6]).reshape(num_output, cin, k, k)
            b = wb.raw(num_output) if p.get(5, 0) else None
            out = conv2d(ins[0], w, b, (pad, pad, pad, pad), p.get(2, 1))
            act = p.get(9, 0)
            if act == 1:
                out = np.maximum(out, 0)
            elif act == 2:
                slope = p[10][0]
                out = np.where(out < 0, out * slope, out)
            else:
                assert act == 0
        elif ltype == "PReLU":
            slope = wb.raw(p[0])
            s = slope[:, None, None] if p[0] > 1 else slope[0]
            out = np.where(ins[0] < 0, ins[0] * s, ins[0])
        elif ltype == "PixelShuffle":
            assert p.get(1, 0) == 0
            out = pixel_shuffle_ncnn(ins[0], p[0])
        elif ltype == "Interp":
            assert p.get(6, 0) == 0 and p.get(3, 0) == 0
            if p[0] == 1:
                out = interp_nearest_ncnn(ins[0], p[1], p[2])
            elif p[0] == 3:
                out = interp_bicubic_ncnn(ins[0], p[1], p[2])
            else:
                raise ValueError("resize type %d" % p[0])
        elif ltype == "BinaryOp":
            op = p.get(0, 0)
            assert p.get(1, 0) == 0
            out = [np.add, np.subtract, np.multiply][op](ins[0], ins[1])
        elif ltype == "Eltwise":
            assert p[0] == 1
            coeffs = p.get(1, [1.0] * len(ins))
            out = sum(c * t for c, t in zip(coeffs, ins))
        elif ltype == "Concat":
            assert p.get(0, 0) == 0
            out = np.concatenate(ins, axis=0)
        else:
            raise ValueError("layer type " + ltype)
        blobs[tops[0]] = out
    assert wb.pos == len(wb.data), "the .bin was not consumed exactly"
    consumed = {b for layer in layers for b in layer[2]}
    (output,) = [t for layer in layers for t in layer[3] if t not in consumed]
    return blobs[output]


# --- waifu2x vgg_7 ---------------------------------------------------------------------------


def run_waifu2x(json_path, image01):
    with open(json_path) as f:
        model = json.load(f)
    offset = model[0]["model_config"]["offset"]
    # iproc.padding: image.warp with 'clamp', i.e. edge pixels repeated.
    x = np.pad(image01, ((0, 0), (offset, offset), (offset, offset)), mode="edge")
    for i, layer in enumerate(model):
        w = np.array(layer["weight"], dtype=np.float64)
        b = np.array(layer["bias"], dtype=np.float64)
        x = conv2d(x, w, b)
        if i + 1 < len(model):
            x = np.where(x < 0, x * 0.1, x)
    return np.clip(x, 0.0, 1.0)


# --- fixtures --------------------------------------------------------------------------------


def write_f32(path, array):
    a = np.ascontiguousarray(array, dtype="<f4")
    a.tofile(path)
    return {"file": os.path.basename(path), "shape": list(a.shape), "dtype": "float32",
            "sha256": hashlib.sha256(a.tobytes()).hexdigest()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True,
                    help="the dir scripts/fetch-waifu2x-models filled (holds waifu2x-1.6.5/)")
    ap.add_argument("--photo", required=True, help="chelsea.png from Debian's python3-skimage")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests",
                                                  "fixtures"))
    ap.add_argument("--crop", default="24,24,100,150", help="h,w,top,left of the photo crop")
    ap.add_argument("--crop-small", default="16,16,104,154",
                    help="h,w,top,left for realesrgan-x4plus-anime (keeps the fixture small)")
    args = ap.parse_args()

    package = os.path.join(args.model_dir, "waifu2x-1.6.5", "package")
    photo = np.asarray(Image.open(args.photo).convert("RGB"))

    def crop(spec):
        h, w, top, left = (int(v) for v in spec.split(","))
        return photo[top:top + h, left:left + w].transpose(2, 0, 1).astype(np.float64)  # CHW

    source = {"photo": "chelsea.png (skimage.data.chelsea, 'Chelsea the cat', CC0 by Stefan "
                       "van der Walt) from Debian's python3-skimage 0.19.3-8",
              "photo_sha256": hashlib.sha256(open(args.photo, "rb").read()).hexdigest(),
              "generator": "tools/ncnn-reference/reference.py (NumPy %s, float64)" % np.__version__}

    ncnn_dir = os.path.join(args.out, "ncnn")
    os.makedirs(ncnn_dir, exist_ok=True)
    inputs = {"input": args.crop, "input-small": args.crop_small}
    index = {"source": source, "inputs": {}, "models": {}}
    for key, spec in inputs.items():
        img = crop(spec)
        index["inputs"][key] = dict(write_f32(os.path.join(ncnn_dir, key + ".f32"), img[None]),
                                    crop_h_w_top_left=spec)
    models = [("realesr-animevideov3-x2", "input"), ("realesr-animevideov3-x3", "input"),
              ("realesr-animevideov3-x4", "input"), ("realesrgan-x4plus-anime", "input-small")]
    for name, key in models:
        img = crop(inputs[key])
        base = os.path.join(package, "real-esrgan", "models", name)
        y = run_ncnn(base + ".param", base + ".bin", img / 255.0) * 255.0
        entry = write_f32(os.path.join(ncnn_dir, name + ".f32"), y[None])
        entry["input"] = key
        index["models"][name] = entry
        print(name, y.shape, "min %.3f max %.3f" % (y.min(), y.max()), file=sys.stderr)
    with open(os.path.join(ncnn_dir, "fixtures.json"), "w") as f:
        json.dump(index, f, indent=1)

    w2x_dir = os.path.join(args.out, "waifu2x")
    os.makedirs(w2x_dir, exist_ok=True)
    img = crop(args.crop)
    index = {"source": source,
             "inputs": {"input": dict(write_f32(os.path.join(w2x_dir, "input.f32"), img[None]),
                                      crop_h_w_top_left=args.crop)},
             "models": {}}
    for level in range(4):
        name = "noise%d" % level
        path = os.path.join(package, "waifu2x", "models_rgb", name + "_model.json")
        y = run_waifu2x(path, img / 255.0) * 255.0
        entry = write_f32(os.path.join(w2x_dir, name + ".f32"), y[None])
        entry["input"] = "input"
        index["models"][name] = entry
        print(name, y.shape, "mean |y - x| %.3f" % np.abs(y - img).mean(), file=sys.stderr)
    with open(os.path.join(w2x_dir, "fixtures.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()

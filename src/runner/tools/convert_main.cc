// switchyard-convert: converts models of other frameworks to TorchScript (docs/converters.md).
//
//   switchyard-convert ncnn --param m.param [--bin m.bin] --out m.pt
//                           [--contract upscale|live-video-to-video] [--value-range 1]
//   switchyard-convert waifu2x --in noise2_model.json --out waifu2x-noise2.pt
//   switchyard-convert tfjs --in model.json --out model.pt [--value-range 0..1]
//   switchyard-convert onnx --in model.onnx --out model.pt
//   switchyard-convert tflite --in m.tflite --out m.pt
//                             [--contract segment-anything-2|live-video-to-video]
//   switchyard-convert ocr --det det.onnx --rec rec.onnx [--cls cls.onnx] --keys keys.txt
//                          --out paddleocr.pt
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <string>

#include <torch/script.h>
#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "runner/converter_support.h"
#include "runner/ncnn_converter.h"
#include "runner/ocr_bundle.h"
#include "runner/onnx_converter.h"
#include "runner/tfjs_converter.h"
#include "runner/tflite_converter.h"
#include "runner/waifu2x_converter.h"

namespace {

namespace fs = std::filesystem;
using ::switchyard::runner::NcnnContract;

// Saves the module atomically (a .tmp, then a rename) and prints one summary line.
int Save(const std::string& format, absl::StatusOr<torch::jit::Module> module,
         const fs::path& out_path, std::chrono::steady_clock::time_point start) {
  if (!module.ok()) {
    std::cerr << "switchyard-convert " << format << ": " << module.status() << "\n";
    return 1;
  }
  auto saved = switchyard::runner::convert::SaveModule(*module, out_path);
  if (!saved.ok()) {
    std::cerr << "switchyard-convert " << format << ": " << saved.status().message() << "\n";
    return 1;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::cout << "wrote " << out_path.string() << " (" << format << "): " << saved->parameters
            << " parameters (" << saved->values << " values), scale " << saved->scale << ", "
            << static_cast<int64_t>(ms) << " ms\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Converts models of other frameworks to TorchScript for switchyard's pipelines "
      "(docs/converters.md)"};
  app.require_subcommand(1);

  CLI::App* ncnn =
      app.add_subcommand("ncnn",
                         "ncnn .param/.bin (e.g. Real-ESRGAN realesr-animevideov3) -> upscale or "
                         "live-video-to-video TorchScript");
  fs::path param_path, bin_path, ncnn_out;
  std::string contract = "upscale";
  double value_range = 1.0;
  ncnn->add_option("--param", param_path, "ncnn .param (text) file")->required();
  ncnn->add_option("--bin", bin_path, "ncnn .bin weights (default: the .param's name with .bin)");
  ncnn->add_option("--out", ncnn_out, "TorchScript file to write, e.g. model.pt")->required();
  ncnn->add_option("--contract", contract,
                   "pipeline contract of forward: upscale (forward(x)) or live-video-to-video "
                   "(forward(frame, params), output cropped to even sizes)")
      ->check(CLI::IsMember({"upscale", "live-video-to-video"}))
      ->capture_default_str();
  ncnn->add_option("--value-range", value_range,
                   "pixel value of white for the network: 1 for networks on 0..1 (Real-ESRGAN), "
                   "255 for 0..255")
      ->capture_default_str();

  CLI::App* waifu2x =
      app.add_subcommand("waifu2x",
                         "waifu2x vgg_7 JSON (models_rgb/noise{0..3}_model.json) -> image-to-image "
                         "TorchScript (denoiser; prompt ignored)");
  fs::path waifu2x_in, waifu2x_out;
  waifu2x->add_option("--in", waifu2x_in, "waifu2x model JSON")->required();
  waifu2x->add_option("--out", waifu2x_out, "TorchScript file to write")->required();

  CLI::App* tfjs = app.add_subcommand(
      "tfjs", "TF.js layers-model (model.json + weight shards) -> upscale TorchScript");
  fs::path tfjs_in, tfjs_out;
  tfjs->add_option("--in", tfjs_in, "TF.js model.json (weight shards beside it)")->required();
  tfjs->add_option("--out", tfjs_out, "TorchScript file to write")->required();
  std::string tfjs_range = "0..255";
  tfjs->add_option("--value-range", tfjs_range,
                   "value range the TF.js model works in (UpscalerJS's inputRange/outputRange): "
                   "0..255 (default) or 0..1; the module always takes and returns 0..255")
      ->check(CLI::IsMember({"0..255", "0..1"}));

  CLI::App* onnx = app.add_subcommand(
      "onnx", "ONNX model (one float32 input, one output; e.g. PaddleOCR) -> TorchScript");
  fs::path onnx_in, onnx_out;
  onnx->add_option("--in", onnx_in, "ONNX model file")->required();
  onnx->add_option("--out", onnx_out, "TorchScript file to write")->required();
  CLI::App* ocr = app.add_subcommand(
      "ocr",
      "PaddleOCR detector, recogniser (and orientation classifier) ONNX models + keys file -> one "
      "image-to-text TorchScript bundle (the OCR contract, docs/pipelines-image.md)");
  fs::path ocr_det, ocr_rec, ocr_cls, ocr_keys, ocr_out;
  ocr->add_option("--det", ocr_det, "text detection ONNX model (DB)")->required();
  ocr->add_option("--rec", ocr_rec, "text recognition ONNX model (CTC)")->required();
  ocr->add_option("--cls", ocr_cls, "text orientation classifier ONNX model (optional)");
  ocr->add_option("--keys", ocr_keys, "the recogniser's dictionary, one character per line")
      ->required();
  ocr->add_option("--out", ocr_out, "TorchScript file to write")->required();

  CLI::App* tflite = app.add_subcommand(
      "tflite",
      "TFLite flatbuffer (MediaPipe selfie segmentation) -> segment-anything-2 (person mask) or "
      "live-video-to-video (background blur) TorchScript");
  fs::path tflite_in, tflite_out;
  std::string tflite_contract = "segment-anything-2";
  tflite->add_option("--in", tflite_in, ".tflite model")->required();
  tflite->add_option("--out", tflite_out, "TorchScript file to write")->required();
  tflite
      ->add_option("--contract", tflite_contract,
                   "pipeline contract of forward: segment-anything-2 (the person mask; prompts "
                   "ignored) or live-video-to-video (background blurred behind the person)")
      ->check(CLI::IsMember({"segment-anything-2", "live-video-to-video"}))
      ->capture_default_str();

  CLI11_PARSE(app, argc, argv);

  const auto start = std::chrono::steady_clock::now();
  if (ncnn->parsed()) {
    if (bin_path.empty()) bin_path = fs::path(param_path).replace_extension(".bin");
    switchyard::runner::NcnnConvertOptions options;
    options.contract = contract == "upscale" ? NcnnContract::kUpscale : NcnnContract::kLiveVideo;
    options.value_range = value_range;
    return Save("ncnn", switchyard::runner::ConvertNcnnModel(param_path, bin_path, options),
                ncnn_out, start);
  }
  if (onnx->parsed()) {
    return Save("onnx", switchyard::runner::ConvertOnnxModel(onnx_in), onnx_out, start);
  }
  if (tflite->parsed()) {
    switchyard::runner::TfliteConvertOptions options;
    options.contract = tflite_contract == "segment-anything-2"
                           ? switchyard::runner::TfliteContract::kSegmentAnything2
                           : switchyard::runner::TfliteContract::kLiveVideo;
    return Save("tflite", switchyard::runner::ConvertTfliteModel(tflite_in, options), tflite_out,
                start);
  }
  if (waifu2x->parsed()) {
    return Save("waifu2x", switchyard::runner::ConvertWaifu2xModel(waifu2x_in), waifu2x_out, start);
  }
  if (ocr->parsed()) {
    auto bundle = [&]() -> absl::StatusOr<torch::jit::Module> {
      auto keys = switchyard::runner::ReadOcrKeys(ocr_keys);
      if (!keys.ok()) return keys.status();
      switchyard::runner::OcrNetworks networks;
      auto det = switchyard::runner::ConvertOnnxModel(ocr_det);
      if (!det.ok()) return det.status();
      networks.det = std::move(*det);
      auto rec = switchyard::runner::ConvertOnnxModel(ocr_rec);
      if (!rec.ok()) return rec.status();
      networks.rec = std::move(*rec);
      if (!ocr_cls.empty()) {
        auto cls = switchyard::runner::ConvertOnnxModel(ocr_cls);
        if (!cls.ok()) return cls.status();
        networks.cls = std::move(*cls);
      }
      return switchyard::runner::BuildOcrBundle(std::move(networks), *keys);
    };
    return Save("ocr", bundle(), ocr_out, start);
  }
  switchyard::runner::TfjsConvertOptions tfjs_options;
  if (tfjs_range == "0..1") {
    tfjs_options.value_range = switchyard::runner::TfjsConvertOptions::ValueRange::k0To1;
  }
  return Save("tfjs", switchyard::runner::ConvertTfjsLayersModel(tfjs_in, tfjs_options), tfjs_out,
              start);
}

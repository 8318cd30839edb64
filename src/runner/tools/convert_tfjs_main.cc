// switchyard-convert-tfjs: converts a TF.js layers-model (model.json + shards) to TorchScript.
//
//   switchyard-convert-tfjs --in path/to/model.json --out model.pt [--value-range 0..1]
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#include <torch/script.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "runner/converter_support.h"
#include "runner/tfjs_converter.h"

namespace {

// Layer count from model.json, for the summary line only (the converter has validated it).
int64_t CountLayers(const std::filesystem::path& model_json) {
  std::ifstream in(model_json);
  nlohmann::json root = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded()) return -1;
  nlohmann::json* model = &root["modelTopology"];
  if (model->contains("model_config")) model = &(*model)["model_config"];
  nlohmann::json& layers = (*model)["config"]["layers"];
  return layers.is_array() ? static_cast<int64_t>(layers.size()) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Converts a TensorFlow.js layers-model (model.json + weight shards) to TorchScript"};
  std::filesystem::path in_path;
  std::filesystem::path out_path;
  app.add_option("--in", in_path, "TF.js model.json (weight shards beside it)")->required();
  app.add_option("--out", out_path, "TorchScript file to write, e.g. model.pt")->required();
  std::string value_range = "0..255";
  app.add_option("--value-range", value_range,
                 "value range the TF.js model works in (UpscalerJS's inputRange/outputRange): "
                 "0..255 (default) or 0..1; the TorchScript module always takes and returns 0..255")
      ->check(CLI::IsMember({"0..255", "0..1"}));
  CLI11_PARSE(app, argc, argv);

  switchyard::runner::TfjsConvertOptions options;
  if (value_range == "0..1") {
    options.value_range = switchyard::runner::TfjsConvertOptions::ValueRange::k0To1;
  }
  const auto start = std::chrono::steady_clock::now();
  auto module = switchyard::runner::ConvertTfjsLayersModel(in_path, options);
  if (!module.ok()) {
    std::cerr << "switchyard-convert-tfjs: " << module.status() << "\n";
    return 1;
  }
  auto saved = switchyard::runner::convert::SaveModule(*module, out_path);
  if (!saved.ok()) {
    std::cerr << "switchyard-convert-tfjs: " << saved.status().message() << "\n";
    return 1;
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::cout << "wrote " << out_path.string() << ": " << CountLayers(in_path) << " layers, "
            << saved->parameters << " parameters (" << saved->values << " values), scale "
            << saved->scale << ", value range " << value_range << ", " << static_cast<int64_t>(ms)
            << " ms\n";
  return 0;
}

// A TF.js layers-model's model.json as the TF.js converter (tfjs_converter.h) reads it: the Keras
// functional graph (layers in an order where inputs come first) and the float32 weights of the
// manifest, read from the shards beside it. Errors name model.json (and the layer).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"

namespace switchyard::runner::tfjs {

// One Keras layer of the functional graph, as read from model.json.
struct Layer {
  std::string name;
  std::string class_name;
  const nlohmann::json* config = nullptr;  // points into the parsed model.json
  std::vector<std::string> inputs;         // inbound layer names, in order
};

struct Graph {
  std::vector<Layer> layers;  // as listed in model.json
  std::vector<size_t> order;  // indexes into `layers`, each after the layers it takes input from
  std::string input_layer;
  std::string output_layer;
};

// A float32 weight from the manifest, already read from the shards (TF.js layout).
struct Weight {
  std::vector<int64_t> shape;
  std::vector<float> data;
  bool used = false;  // set by the code generation that consumes it
};

// INVALID_ARGUMENT "<model_json>: <reason>".
absl::Status ModelError(const std::filesystem::path& model_json, const std::string& reason);
// INVALID_ARGUMENT "<model_json>: layer '<name>' (<class>): <reason>".
absl::Status LayerError(const std::filesystem::path& model_json, const Layer& layer,
                        const std::string& reason);

// "[a, b, c]", for messages.
std::string ShapeString(const std::vector<int64_t>& shape);

// Reads the graph of `root` (model.json parsed): format, Keras 2 functional model config, at most
// kTfjsMaxLayers layers with unique names, one input and one output layer, no cycles.
absl::Status ParseTopology(const std::filesystem::path& model_json, const nlohmann::json& root,
                           Graph* graph);

// Reads the weightsManifest's float32 weights from the shards beside `model_json` (at most
// kTfjsMaxWeightBytes together); every shard's bytes must match what the manifest describes.
absl::Status ReadWeights(const std::filesystem::path& model_json, const nlohmann::json& root,
                         std::map<std::string, Weight>* weights);

}  // namespace switchyard::runner::tfjs

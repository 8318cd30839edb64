#include "runner/tfjs_model.h"

#include <bit>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "runner/converter_support.h"
#include "runner/tfjs_converter.h"

namespace switchyard::runner::tfjs {
namespace {

static_assert(std::endian::native == std::endian::little,
              "TF.js weight shards are little-endian; big-endian hosts are not supported");

using Json = nlohmann::json;
using convert::Quote;

// Keras 2 form: "inbound_nodes": [[["layer", node_index, tensor_index, {kwargs}], ...]].
absl::Status ParseInbound(const std::filesystem::path& model_json, const Json& jl, Layer* layer) {
  if (!jl.contains("inbound_nodes")) return absl::OkStatus();
  const Json& nodes = jl["inbound_nodes"];
  if (!nodes.is_array()) return LayerError(model_json, *layer, "inbound_nodes is not an array");
  if (nodes.empty()) return absl::OkStatus();
  if (nodes.size() != 1) {
    return LayerError(model_json, *layer,
                      "layer is called more than once (shared layers are unsupported)");
  }
  if (!nodes[0].is_array()) {
    return LayerError(model_json, *layer,
                      "unsupported inbound_nodes format (expected Keras 2 lists)");
  }
  for (const Json& ref : nodes[0]) {
    if (!ref.is_array() || ref.size() < 3 || !ref[0].is_string() || !ref[1].is_number_integer() ||
        !ref[2].is_number_integer()) {
      return LayerError(model_json, *layer, absl::StrCat("malformed inbound node ", ref.dump()));
    }
    if (ref[1].get<int64_t>() != 0 || ref[2].get<int64_t>() != 0) {
      return LayerError(
          model_json, *layer,
          absl::StrCat("inbound node ", ref.dump(), " uses a shared layer or multi-output layer"));
    }
    if (ref.size() > 3 && ref[3].is_object() && !ref[3].empty()) {
      return LayerError(model_json, *layer,
                        absl::StrCat("inbound call arguments ", ref[3].dump(), " are unsupported"));
    }
    layer->inputs.push_back(ref[0].get<std::string>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ModelError(const std::filesystem::path& model_json, const std::string& reason) {
  return absl::InvalidArgumentError(absl::StrCat(model_json.string(), ": ", reason));
}

absl::Status LayerError(const std::filesystem::path& model_json, const Layer& layer,
                        const std::string& reason) {
  return ModelError(
      model_json, absl::StrCat("layer ", Quote(layer.name), " (", layer.class_name, "): ", reason));
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

absl::Status ParseTopology(const std::filesystem::path& model_json, const Json& root,
                           Graph* graph) {
  *graph = Graph();
  if (root.contains("format") &&
      (!root["format"].is_string() || root["format"].get<std::string>() != "layers-model")) {
    return ModelError(model_json,
                      absl::StrCat("format is ", root["format"].dump(),
                                   ", only \"layers-model\" is supported (graph models are not)"));
  }
  if (!root.contains("modelTopology") || !root["modelTopology"].is_object()) {
    return ModelError(model_json, "missing \"modelTopology\" object");
  }
  const Json* model = &root["modelTopology"];
  if (model->contains("model_config")) model = &(*model)["model_config"];
  if (!model->is_object() || !model->contains("class_name") || !model->contains("config")) {
    return ModelError(model_json, "modelTopology has no Keras model config (class_name + config)");
  }
  const Json& class_name = (*model)["class_name"];
  if (!class_name.is_string() ||
      (class_name.get<std::string>() != "Model" && class_name.get<std::string>() != "Functional")) {
    return ModelError(model_json, absl::StrCat("model class ", class_name.dump(),
                                               " is not supported (only functional Model graphs)"));
  }
  const Json& config = (*model)["config"];
  if (!config.is_object() || !config.contains("layers") || !config["layers"].is_array()) {
    return ModelError(model_json, "model config has no \"layers\" array");
  }

  if (config["layers"].size() > static_cast<size_t>(kTfjsMaxLayers)) {
    return ModelError(model_json, absl::StrCat("model has ", config["layers"].size(),
                                               " layers, more than the limit of ", kTfjsMaxLayers));
  }
  std::map<std::string, size_t> index;
  for (const Json& jl : config["layers"]) {
    Layer layer;
    if (!jl.is_object() || !jl.contains("class_name") || !jl["class_name"].is_string() ||
        !jl.contains("config") || !jl["config"].is_object()) {
      return ModelError(model_json, absl::StrCat("layer #", graph->layers.size(),
                                                 " is not an object with class_name and config"));
    }
    layer.class_name = jl["class_name"].get<std::string>();
    layer.config = &jl["config"];
    if (jl.contains("name") && jl["name"].is_string()) {
      layer.name = jl["name"].get<std::string>();
    } else if (layer.config->contains("name") && (*layer.config)["name"].is_string()) {
      layer.name = (*layer.config)["name"].get<std::string>();
    } else {
      return ModelError(model_json, absl::StrCat("layer #", graph->layers.size(), " (",
                                                 layer.class_name, ") has no name"));
    }
    if (index.count(layer.name)) return LayerError(model_json, layer, "duplicate layer name");
    SY_RETURN_IF_ERROR(ParseInbound(model_json, jl, &layer));
    index[layer.name] = graph->layers.size();
    graph->layers.push_back(std::move(layer));
  }
  if (graph->layers.empty()) return ModelError(model_json, "model has no layers");

  auto endpoint = [&](const char* key, std::string* out) -> absl::Status {
    const Json& list = config.contains(key) ? config[key] : Json();
    if (!list.is_array() || list.size() != 1 || !list[0].is_array() || list[0].empty() ||
        !list[0][0].is_string()) {
      return ModelError(
          model_json, absl::StrCat("\"", key, "\" must list exactly one layer, got ", list.dump()));
    }
    *out = list[0][0].get<std::string>();
    if (!index.count(*out)) {
      return ModelError(model_json,
                        absl::StrCat("\"", key, "\" names unknown layer ", Quote(*out)));
    }
    return absl::OkStatus();
  };
  SY_RETURN_IF_ERROR(endpoint("input_layers", &graph->input_layer));
  SY_RETURN_IF_ERROR(endpoint("output_layers", &graph->output_layer));

  // Topological order (Kahn), stable with respect to the file's order.
  std::vector<int> pending(graph->layers.size(), 0);
  std::vector<std::vector<size_t>> consumers(graph->layers.size());
  for (size_t i = 0; i < graph->layers.size(); ++i) {
    for (const std::string& in : graph->layers[i].inputs) {
      auto it = index.find(in);
      if (it == index.end()) {
        return LayerError(model_json, graph->layers[i],
                          absl::StrCat("input ", Quote(in), " is no layer"));
      }
      ++pending[i];
      consumers[it->second].push_back(i);
    }
  }
  std::set<size_t> ready;
  for (size_t i = 0; i < graph->layers.size(); ++i) {
    if (pending[i] == 0) ready.insert(i);
  }
  while (!ready.empty()) {
    const size_t i = *ready.begin();
    ready.erase(ready.begin());
    graph->order.push_back(i);
    for (size_t c : consumers[i]) {
      if (--pending[c] == 0) ready.insert(c);
    }
  }
  if (graph->order.size() != graph->layers.size())
    return ModelError(model_json, "layer graph has a cycle");
  return absl::OkStatus();
}

absl::Status ReadWeights(const std::filesystem::path& model_json, const Json& root,
                         std::map<std::string, Weight>* weights) {
  weights->clear();
  int64_t weight_bytes = 0;
  if (!root.contains("weightsManifest")) return absl::OkStatus();
  const Json& manifest = root["weightsManifest"];
  if (!manifest.is_array()) return ModelError(model_json, "weightsManifest is not an array");
  const std::filesystem::path dir = model_json.parent_path();
  for (size_t g = 0; g < manifest.size(); ++g) {
    const Json& group = manifest[g];
    if (!group.is_object() || !group.contains("paths") || !group["paths"].is_array() ||
        !group.contains("weights") || !group["weights"].is_array()) {
      return ModelError(model_json,
                        absl::StrCat("weightsManifest group ", g, " lacks paths/weights arrays"));
    }
    std::string bytes;
    std::vector<std::string> names;
    for (const Json& p : group["paths"]) {
      if (!p.is_string())
        return ModelError(model_json, absl::StrCat("weightsManifest group ", g, ": bad path"));
      names.push_back(p.get<std::string>());
      auto shard = convert::ReadFileLimited(dir / names.back(), "weight shard",
                                            kTfjsMaxWeightBytes - weight_bytes);
      if (!shard.ok()) {
        return absl::Status(shard.status().code(),
                            absl::StrCat(model_json.string(), ": ", shard.status().message(),
                                         " (all shards together may hold at most ",
                                         kTfjsMaxWeightBytes, " bytes)"));
      }
      weight_bytes += static_cast<int64_t>(shard->size());
      bytes += *shard;
    }
    const std::string shards = absl::StrJoin(names, ", ");
    size_t offset = 0;
    for (const Json& w : group["weights"]) {
      if (!w.is_object() || !w.contains("name") || !w["name"].is_string() || !w.contains("shape") ||
          !w["shape"].is_array()) {
        return ModelError(
            model_json, absl::StrCat("weightsManifest group ", g, ": malformed entry ", w.dump()));
      }
      const std::string name = w["name"].get<std::string>();
      const std::string dtype = w.value("dtype", std::string("float32"));
      if (dtype != "float32") {
        return ModelError(model_json, absl::StrCat("weight ", Quote(name), " has dtype ", dtype,
                                                   ", only float32 is supported"));
      }
      if (w.contains("quantization")) {
        return ModelError(model_json, absl::StrCat("weight ", Quote(name),
                                                   " is quantized, which is unsupported"));
      }
      Weight weight;
      int64_t count = 1;
      for (const Json& d : w["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) {
          return ModelError(model_json, absl::StrCat("weight ", Quote(name), " has a bad shape ",
                                                     w["shape"].dump()));
        }
        weight.shape.push_back(d.get<int64_t>());
        // Stop before the product can overflow: no weight can exceed the shard bytes.
        if (d.get<int64_t>() > 0 &&
            count > static_cast<int64_t>(bytes.size() / sizeof(float)) / d.get<int64_t>()) {
          return ModelError(model_json,
                            absl::StrCat("weight ", Quote(name), " shape ", w["shape"].dump(),
                                         " needs more values than the shard(s) ", shards, " hold"));
        }
        count *= d.get<int64_t>();
      }
      const size_t size = static_cast<size_t>(count) * sizeof(float);
      if (offset + size > bytes.size()) {
        return ModelError(
            model_json,
            absl::StrCat("weight shard(s) ", shards, " hold ", bytes.size(),
                         " bytes, too short for the manifest: weight ", Quote(name), " ",
                         ShapeString(weight.shape), " needs bytes ", offset, "..", offset + size));
      }
      weight.data.resize(static_cast<size_t>(count));
      if (size > 0) std::memcpy(weight.data.data(), bytes.data() + offset, size);
      offset += size;
      if ((*weights).count(name))
        return ModelError(model_json, absl::StrCat("duplicate weight ", Quote(name)));
      (*weights).emplace(name, std::move(weight));
    }
    if (offset != bytes.size()) {
      return ModelError(model_json, absl::StrCat("weight shard(s) ", shards, " hold ", bytes.size(),
                                                 " bytes but the manifest describes ", offset));
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::runner::tfjs

#include "orchestrator/serving/inference_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/status.h"
#include "orchestrator/serving/request_context.h"

namespace switchyard::orchestrator {
namespace {

using InputTensor = inference::ModelInferRequest::InferInputTensor;

// The most elements one input tensor may have (guards the shape product against overflow).
constexpr int64_t kMaxElements = int64_t{1} << 40;

const std::map<std::string, at::ScalarType>& DatatypeTable() {
  static const auto* table = new std::map<std::string, at::ScalarType>{
      {"BOOL", at::kBool},  {"INT8", at::kChar},   {"INT16", at::kShort}, {"INT32", at::kInt},
      {"INT64", at::kLong}, {"UINT8", at::kByte},  {"FP16", at::kHalf},   {"BF16", at::kBFloat16},
      {"FP32", at::kFloat}, {"FP64", at::kDouble},
  };
  return *table;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

absl::Status InputError(const std::string& name, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("input '", name, "': ", what));
}

// How many of the typed contents fields are populated, and the total number of values in them.
int PopulatedFields(const inference::InferTensorContents& c) {
  return (c.bool_contents_size() > 0) + (c.int_contents_size() > 0) +
         (c.int64_contents_size() > 0) + (c.uint_contents_size() > 0) +
         (c.uint64_contents_size() > 0) + (c.fp32_contents_size() > 0) +
         (c.fp64_contents_size() > 0) + (c.bytes_contents_size() > 0);
}

// Copies a repeated field into a new tensor of `type` (values converted element by element).
template <typename Field>
absl::StatusOr<at::Tensor> FromField(const Field& field, const char* field_name,
                                     const std::vector<int64_t>& shape, int64_t numel,
                                     at::ScalarType type, const std::string& name) {
  if (field.size() != numel) {
    return InputError(
        name, absl::StrCat("shape ", ShapeString(shape), " needs ", numel, " values but contents.",
                           field_name, " has ", field.size()));
  }
  // Staged in a type libtorch knows (no uint32; std::vector<bool> has no contiguous data).
  using T = typename Field::value_type;
  using Src = std::conditional_t<std::is_same_v<T, bool>, uint8_t,
                                 std::conditional_t<std::is_same_v<T, uint32_t>, int64_t, T>>;
  std::vector<Src> values(field.begin(), field.end());
  at::Tensor t = at::empty({numel}, c10::CppTypeToScalarType<Src>::value);
  if (numel > 0) std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(Src));
  if (type == at::kBool) return t.ne(0).reshape(shape);
  return t.reshape(shape).to(type);
}

}  // namespace

absl::StatusOr<at::ScalarType> ScalarTypeOf(const std::string& datatype) {
  auto it = DatatypeTable().find(datatype);
  if (it == DatatypeTable().end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "datatype '", datatype,
        "' is not supported (BOOL, INT8, INT16, INT32, INT64, UINT8, FP16, BF16, FP32, FP64)"));
  }
  return it->second;
}

absl::StatusOr<std::string> DatatypeOf(at::ScalarType type) {
  for (const auto& [name, t] : DatatypeTable()) {
    if (t == type) return name;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor dtype ", c10::toString(type), " has no Open Inference datatype"));
}

absl::StatusOr<std::vector<TensorSpec>> TensorSpecsFromOptions(const nlohmann::json& options,
                                                               const std::string& key,
                                                               const std::string& default_name) {
  if (!options.is_object() || !options.contains(key)) {
    return std::vector<TensorSpec>{{default_name, "FP32", {-1}}};
  }
  const auto& list = options.at(key);
  if (!list.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("options.", key, " must be an array"));
  }
  std::vector<TensorSpec> specs;
  for (size_t i = 0; i < list.size(); ++i) {
    const auto& e = list[i];
    const std::string where = absl::StrCat("options.", key, "[", i, "]");
    if (!e.is_object() || !e.contains("name") || !e.at("name").is_string()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": needs a string \"name\""));
    }
    TensorSpec s;
    s.name = e.at("name").get<std::string>();
    s.datatype = "FP32";
    if (e.contains("datatype")) {
      if (!e.at("datatype").is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": datatype must be a string"));
      }
      s.datatype = e.at("datatype").get<std::string>();
      if (auto t = ScalarTypeOf(s.datatype); !t.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": ", t.status().message()));
      }
    }
    if (e.contains("shape")) {
      const auto& shape = e.at("shape");
      if (!shape.is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": shape must be an array"));
      }
      for (const auto& d : shape) {
        if (!d.is_number_integer() || d.get<int64_t>() < -1) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": shape entries must be integers >= -1"));
        }
        s.shape.push_back(d.get<int64_t>());
      }
    } else {
      s.shape = {-1};
    }
    specs.push_back(std::move(s));
  }
  return specs;
}

int64_t MaxInputElements(const ModelConfig& model) {
  if (model.max_input_elements > 0) return model.max_input_elements;
  static constexpr const char* kImagePipelines[] = {"upscale", "image-to-image", "image-to-video",
                                                    "segment-anything-2", "image-to-text"};
  for (const char* p : kImagePipelines) {
    if (model.pipeline == p) return std::min(kMaxElements / 4, model.max_input_pixels) * 4;
  }
  return kDefaultMaxInputElements;
}

absl::Status CheckInputSizes(const inference::ModelInferRequest& request, int64_t max_elements) {
  int64_t total = 0;
  for (const auto& input : request.inputs()) {
    const std::vector<int64_t> shape(input.shape().begin(), input.shape().end());
    bool empty = false;
    for (int64_t d : shape) {
      if (d < 0) {
        return InputError(input.name(), absl::StrCat("negative dimension in ", ShapeString(shape)));
      }
      empty = empty || d == 0;
    }
    int64_t numel = empty ? 0 : 1;
    bool over = false;
    for (int64_t d : shape) {
      if (empty) break;
      // Stops instead of overflowing: past the limit is past it.
      if (numel > max_elements / d) {
        over = true;
        break;
      }
      numel *= d;
    }
    if (!over && numel <= max_elements - total) {
      total += numel;
      continue;
    }
    std::string size = over ? absl::StrCat("more than ", max_elements, " elements")
                            : absl::StrCat(numel, " elements");
    if (auto type = ScalarTypeOf(input.datatype()); type.ok() && !over) {
      absl::StrAppend(&size, " (", numel * static_cast<int64_t>(c10::elementSize(*type)),
                      " bytes of ", input.datatype(), ")");
    }
    return InputError(input.name(),
                      absl::StrCat("shape ", ShapeString(shape), " is ", size,
                                   total > 0 ? absl::StrCat(" after ", total, " in earlier inputs")
                                             : std::string(),
                                   "; the model takes at most ", max_elements,
                                   " input elements per call (max_input_elements)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<at::Tensor> TensorFromInput(const InputTensor& input, const std::string* raw) {
  const std::string& name = input.name();
  auto type = ScalarTypeOf(input.datatype());
  if (!type.ok()) return InputError(name, std::string(type.status().message()));
  std::vector<int64_t> shape(input.shape().begin(), input.shape().end());
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) return InputError(name, absl::StrCat("negative dimension in ", ShapeString(shape)));
    if (d > 0 && numel > kMaxElements / d) {
      return InputError(name, absl::StrCat("shape ", ShapeString(shape), " is too large"));
    }
    numel *= d;
  }
  const auto& c = input.contents();
  const int populated = PopulatedFields(c);
  if (raw != nullptr) {
    if (populated > 0) {
      return InputError(name, "has both contents and raw_input_contents; give one of them");
    }
    const int64_t element_size = static_cast<int64_t>(c10::elementSize(*type));
    if (static_cast<int64_t>(raw->size()) != numel * element_size) {
      return InputError(name, absl::StrCat("shape ", ShapeString(shape), " of ", input.datatype(),
                                           " needs ", numel * element_size,
                                           " bytes of raw_input_contents but got ", raw->size()));
    }
    if (*type == at::kBool) {
      // Any non-zero byte is true; libtorch bools must hold exactly 0 or 1.
      at::Tensor bytes = at::empty({numel}, at::kByte);
      if (numel > 0) std::memcpy(bytes.data_ptr(), raw->data(), raw->size());
      return bytes.ne(0).reshape(shape);
    }
    at::Tensor t = at::empty({numel}, *type);
    if (numel > 0) std::memcpy(t.data_ptr(), raw->data(), raw->size());  // little-endian host
    return t.reshape(shape);
  }
  if (populated > 1) return InputError(name, "more than one contents field is set");
  switch (*type) {
    case at::kBool:
      if (populated == 1 && c.bool_contents_size() == 0) break;
      return FromField(c.bool_contents(), "bool_contents", shape, numel, *type, name);
    case at::kChar:
    case at::kShort:
    case at::kInt:
      if (populated == 1 && c.int_contents_size() == 0) break;
      return FromField(c.int_contents(), "int_contents", shape, numel, *type, name);
    case at::kLong:
      if (populated == 1 && c.int64_contents_size() == 0) break;
      return FromField(c.int64_contents(), "int64_contents", shape, numel, *type, name);
    case at::kByte:
      if (populated == 1 && c.uint_contents_size() == 0) break;
      return FromField(c.uint_contents(), "uint_contents", shape, numel, *type, name);
    case at::kHalf:
    case at::kBFloat16:
    case at::kFloat:
      // The protocol has no 16-bit float field: FP16/BF16 values may come as fp32_contents.
      if (populated == 1 && c.fp32_contents_size() == 0) break;
      return FromField(c.fp32_contents(), "fp32_contents", shape, numel, *type, name);
    case at::kDouble:
      if (populated == 1 && c.fp64_contents_size() == 0) break;
      return FromField(c.fp64_contents(), "fp64_contents", shape, numel, *type, name);
    default:
      break;
  }
  return InputError(name,
                    absl::StrCat("contents do not use the field for datatype ", input.datatype()));
}

absl::StatusOr<std::vector<at::Tensor>> TensorsFromRequest(
    const inference::ModelInferRequest& request) {
  if (request.inputs_size() == 0) return absl::InvalidArgumentError("the request has no inputs");
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw && request.raw_input_contents_size() != request.inputs_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw_input_contents has ", request.raw_input_contents_size(), " entries for ",
                     request.inputs_size(), " inputs (one per input expected)"));
  }
  std::vector<at::Tensor> tensors;
  tensors.reserve(request.inputs_size());
  for (int i = 0; i < request.inputs_size(); ++i) {
    auto t = TensorFromInput(request.inputs(i), raw ? &request.raw_input_contents(i) : nullptr);
    if (!t.ok()) return t.status();
    tensors.push_back(std::move(*t));
  }
  return tensors;
}

absl::StatusOr<std::vector<at::Tensor>> MatchInputs(const inference::ModelInferRequest& request,
                                                    std::vector<at::Tensor> tensors,
                                                    const std::vector<TensorSpec>& specs) {
  if (tensors.size() != specs.size()) {
    std::vector<std::string> names;
    for (const auto& s : specs) names.push_back(s.name);
    return absl::InvalidArgumentError(absl::StrCat("the model takes ", specs.size(), " input(s) (",
                                                   absl::StrJoin(names, ", "),
                                                   ") but the request has ", tensors.size()));
  }
  // Declared order by name when every request name is declared; else positional.
  std::vector<int> order(specs.size());
  bool by_name = true;
  for (size_t i = 0; i < specs.size() && by_name; ++i) {
    order[i] = -1;
    for (int j = 0; j < request.inputs_size(); ++j) {
      if (request.inputs(j).name() == specs[i].name) order[i] = j;
    }
    by_name = order[i] >= 0;
  }
  if (!by_name) {
    for (size_t i = 0; i < specs.size(); ++i) order[i] = static_cast<int>(i);
  }
  std::vector<at::Tensor> out;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    const auto& input = request.inputs(order[i]);
    at::Tensor& t = tensors[order[i]];
    auto type = ScalarTypeOf(spec.datatype);
    if (type.ok() && *type != t.scalar_type()) {
      return InputError(input.name(),
                        absl::StrCat("datatype ", input.datatype(), " but the model's ", spec.name,
                                     " is ", spec.datatype));
    }
    bool shape_ok = spec.shape.size() == static_cast<size_t>(t.dim());
    for (size_t d = 0; shape_ok && d < spec.shape.size(); ++d) {
      shape_ok = spec.shape[d] == -1 || spec.shape[d] == t.size(static_cast<int64_t>(d));
    }
    // A declared [-1] accepts any shape (the default spec says nothing about rank).
    if (spec.shape == std::vector<int64_t>{-1}) shape_ok = true;
    if (!shape_ok) {
      return InputError(input.name(),
                        absl::StrCat("shape ", ShapeString(t.sizes().vec()), " does not match ",
                                     spec.name, "'s declared shape ", ShapeString(spec.shape)));
    }
    out.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<std::vector<at::Tensor>> TensorsFromResult(const c10::IValue& result) {
  std::vector<at::Tensor> out;
  auto add = [&out](const c10::IValue& v) -> absl::Status {
    if (!v.isTensor()) {
      return absl::InternalError(
          absl::StrCat("forward() returned a ", v.tagKind(), " where a tensor was expected"));
    }
    out.push_back(v.toTensor());
    return absl::OkStatus();
  };
  if (result.isTensor()) {
    SY_RETURN_IF_ERROR(add(result));
  } else if (result.isTuple()) {
    for (const auto& v : result.toTupleRef().elements()) SY_RETURN_IF_ERROR(add(v));
  } else if (result.isList()) {
    for (const c10::IValue& v : result.toListRef()) SY_RETURN_IF_ERROR(add(v));
  } else {
    return absl::InternalError(absl::StrCat("forward() returned a ", result.tagKind(),
                                            "; expected a tensor or a tuple/list of tensors"));
  }
  return out;
}

std::vector<std::string> OutputNames(const std::vector<TensorSpec>& declared, size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    names.push_back(i < declared.size() ? declared[i].name : absl::StrCat("OUTPUT__", i));
  }
  return names;
}

absl::Status FillResponse(const inference::ModelInferRequest& request,
                          const std::vector<at::Tensor>& outputs,
                          const std::vector<std::string>& names,
                          inference::ModelInferResponse* response) {
  std::vector<size_t> selected;
  if (request.outputs_size() == 0) {
    for (size_t i = 0; i < outputs.size(); ++i) selected.push_back(i);
  } else {
    for (const auto& want : request.outputs()) {
      auto it = std::find(names.begin(), names.end(), want.name());
      if (it == names.end() || static_cast<size_t>(it - names.begin()) >= outputs.size()) {
        return absl::InvalidArgumentError(absl::StrCat("requested output '", want.name(),
                                                       "' is not an output of the model (",
                                                       absl::StrJoin(names, ", "), ")"));
      }
      selected.push_back(static_cast<size_t>(it - names.begin()));
    }
  }
  response->set_model_name(request.model_name());
  response->set_model_version(kInferenceModelVersion);
  response->set_id(request.id());
  for (size_t i : selected) {
    at::Tensor t = outputs[i].to(at::kCPU).contiguous();
    auto datatype = DatatypeOf(t.scalar_type());
    if (!datatype.ok()) {
      return absl::InternalError(
          absl::StrCat("output '", names[i], "': ", datatype.status().message()));
    }
    auto* out = response->add_outputs();
    out->set_name(names[i]);
    out->set_datatype(*datatype);
    for (int64_t d : t.sizes()) out->add_shape(d);
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    std::string* raw = response->add_raw_output_contents();
    raw->resize(bytes);
    if (bytes > 0) std::memcpy(raw->data(), t.data_ptr(), bytes);  // little-endian host
  }
  return absl::OkStatus();
}

InferenceService::InferenceService(ModelManager* models, std::function<bool()> ready,
                                   StatusBoard* board)
    : models_(models), ready_(std::move(ready)), board_(board) {}

grpc::Status InferenceService::ServerLive(grpc::ServerContext*, const inference::ServerLiveRequest*,
                                          inference::ServerLiveResponse* response) {
  response->set_live(true);
  return grpc::Status::OK;
}

grpc::Status InferenceService::ServerReady(grpc::ServerContext*,
                                           const inference::ServerReadyRequest*,
                                           inference::ServerReadyResponse* response) {
  response->set_ready(!ready_ || ready_());
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelReady(grpc::ServerContext*,
                                          const inference::ModelReadyRequest* request,
                                          inference::ModelReadyResponse* response) {
  if (models_->Find(request->name()) == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model '", LogSafe(request->name()), "' is not served here"));
  }
  bool ready = false;
  for (const auto& c : models_->Capabilities()) {
    if (c.model_id() == request->name()) ready = c.state() == node::v1::MODEL_STATE_READY;
  }
  response->set_ready(ready);
  return grpc::Status::OK;
}

grpc::Status InferenceService::ServerMetadata(grpc::ServerContext*,
                                              const inference::ServerMetadataRequest*,
                                              inference::ServerMetadataResponse* response) {
  response->set_name("switchyard-orchestrator");
  response->set_version("0.1.0");
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelMetadata(grpc::ServerContext*,
                                             const inference::ModelMetadataRequest* request,
                                             inference::ModelMetadataResponse* response) {
  const ModelConfig* config = models_->Find(request->name());
  if (config == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model '", LogSafe(request->name()), "' is not served here"));
  }
  auto inputs = TensorSpecsFromOptions(config->options, "inputs", "INPUT__0");
  if (!inputs.ok()) return ToGrpcStatus(inputs.status());
  auto outputs = TensorSpecsFromOptions(config->options, "outputs", "OUTPUT__0");
  if (!outputs.ok()) return ToGrpcStatus(outputs.status());
  response->set_name(config->id);
  response->add_versions(kInferenceModelVersion);
  response->set_platform("pytorch_torchscript");
  (*response->mutable_properties())["pipeline"] = config->pipeline;
  auto fill = [](const TensorSpec& s, inference::ModelMetadataResponse::TensorMetadata* m) {
    m->set_name(s.name);
    m->set_datatype(s.datatype);
    for (int64_t d : s.shape) m->add_shape(d);
  };
  for (const auto& s : *inputs) fill(s, response->add_inputs());
  for (const auto& s : *outputs) fill(s, response->add_outputs());
  return grpc::Status::OK;
}

grpc::Status InferenceService::ModelInfer(grpc::ServerContext* context,
                                          const inference::ModelInferRequest* request,
                                          inference::ModelInferResponse* response) {
  const std::string rid = RequestIdOf(context);
  const absl::Time start = absl::Now();
  const std::string& name = request->model_name();
  const ModelConfig* config = models_->Find(name);
  if (config == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model '", LogSafe(name), "' is not served here"));
  }
  if (!request->model_version().empty() && request->model_version() != kInferenceModelVersion) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("model '", name, "' has no version '", request->model_version(), "' (only '",
                     kInferenceModelVersion, "')"));
  }
  // The model's size limit, before any content is converted or anything runs.
  if (auto st = CheckInputSizes(*request, MaxInputElements(*config)); !st.ok()) {
    return ToGrpcStatus(st);
  }
  auto tensors = TensorsFromRequest(*request);
  if (!tensors.ok()) return ToGrpcStatus(tensors.status());
  std::vector<TensorSpec> declared_outputs;
  if (config->options.is_object() && config->options.contains("inputs")) {
    auto specs = TensorSpecsFromOptions(config->options, "inputs", "INPUT__0");
    if (!specs.ok()) return ToGrpcStatus(specs.status());
    auto matched = MatchInputs(*request, std::move(*tensors), *specs);
    if (!matched.ok()) return ToGrpcStatus(matched.status());
    tensors = std::move(matched);
  }
  if (config->options.is_object() && config->options.contains("outputs")) {
    auto specs = TensorSpecsFromOptions(config->options, "outputs", "OUTPUT__0");
    if (!specs.ok()) return ToGrpcStatus(specs.status());
    declared_outputs = std::move(*specs);
  }

  const absl::Time deadline = DeadlineOf(context);
  auto executor = models_->Acquire(name, deadline);
  if (!executor.ok()) return ToGrpcStatus(executor.status());
  runner::ModelExecutor::Inputs inputs(tensors->begin(), tensors->end());
  runner::CancelToken cancel;
  auto watch = runner::WatchForCancel([context] { return context->IsCancelled(); }, cancel);
  bool queued = false;
  runner::RunOptions options;
  options.on_queued = [&] {
    queued = true;
    if (board_ != nullptr) board_->Changed();
  };
  auto result = (*executor)->Run(std::move(inputs), deadline, cancel, options);
  // A job refused at once (a full queue) changed nothing to show.
  if (!queued) return ToGrpcStatus(result.status());
  if (board_ != nullptr) board_->Changed();
  if (!result.ok()) {
    spdlog::warn("[{}] infer {} failed: {}", rid, name, result.status().ToString());
    const std::string message(result.status().message());
    // libtorch's argument-count errors mean the request has the wrong inputs for forward().
    if (result.status().code() == absl::StatusCode::kInternal &&
        (message.find("xpected at most") != std::string::npos ||
         message.find("issing value for argument") != std::string::npos)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("wrong number of inputs for model '", name, "': ", message));
    }
    return ToGrpcStatus(result.status());
  }
  auto outputs = TensorsFromResult(*result);
  if (!outputs.ok()) return ToGrpcStatus(outputs.status());
  auto filled =
      FillResponse(*request, *outputs, OutputNames(declared_outputs, outputs->size()), response);
  if (!filled.ok()) {
    response->Clear();
    return ToGrpcStatus(filled);
  }
  // The call's units, counted from the request as the gateway counts them, and the price: the
  // gateway pays only when its count agrees (docs/metering.md).
  metering::SetInferReport(
      ReportedUnits(metering::Units(*request, *response), rid) + test_inflate_units_.load(),
      config->price_per_unit, response);
  spdlog::info("[{}] infer {}: {} input(s) -> {} output(s) in {:.0f} ms", rid, name,
               request->inputs_size(), response->outputs_size(),
               absl::ToDoubleMilliseconds(absl::Now() - start));
  return grpc::Status::OK;
}

}  // namespace switchyard::orchestrator

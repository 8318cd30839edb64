// The KServe Open Inference Protocol v2 (inference.GRPCInferenceService) on the orchestrator: the
// generic tensor path for any configured TorchScript model, whatever its pipeline. ModelInfer
// runs forward(*inputs) directly through the model's executor, and reports the call's units (the
// input tensors' elements, common/metering.h) and the model's price in the response's parameters
// "switchyard_units" and "switchyard_price_per_unit". See docs/kserve.md.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/script.h>
#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "inference/open_inference_grpc.grpc.pb.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/models/status_board.h"

namespace switchyard::orchestrator {

// The only model version served; requests may name it or leave the version empty.
inline constexpr const char* kInferenceModelVersion = "1";

// Open Inference Protocol datatype name <-> libtorch dtype. BOOL, INT8/16/32/64, UINT8, FP16,
// BF16, FP32, FP64; anything else (BYTES, UINT16/32/64) is INVALID_ARGUMENT.
absl::StatusOr<at::ScalarType> ScalarTypeOf(const std::string& datatype);
absl::StatusOr<std::string> DatatypeOf(at::ScalarType type);

// A declared input or output of a model (config options "inputs"/"outputs").
struct TensorSpec {
  std::string name;
  std::string datatype;
  std::vector<int64_t> shape;  // -1 for a dimension of any size
};

// The specs in `options[key]` ("inputs" or "outputs"): an array of {name, datatype, shape}.
// Without that key: one FP32 tensor of shape [-1] named `default_name` ("INPUT__0" /
// "OUTPUT__0"). INVALID_ARGUMENT for a malformed entry.
absl::StatusOr<std::vector<TensorSpec>> TensorSpecsFromOptions(const nlohmann::json& options,
                                                               const std::string& key,
                                                               const std::string& default_name);

// Converts one input tensor. `raw` is its raw_input_contents entry, or null when the request
// carries none. INVALID_ARGUMENT (naming the input) for an unknown datatype, a negative
// dimension, data that does not match the shape, or typed contents and raw bytes both given.
absl::StatusOr<at::Tensor> TensorFromInput(
    const inference::ModelInferRequest::InferInputTensor& input, const std::string* raw);

// Elements one ModelInfer call's inputs may have, all together, for `model`: its
// max_input_elements, else 4 x max_input_pixels (an RGBA image at its pixel limit) for pipelines
// whose jobs take images, else kDefaultMaxInputElements. The generic tensor path would otherwise
// bypass the limits of the model's pipeline (docs/kserve.md).
inline constexpr int64_t kDefaultMaxInputElements = int64_t{1} << 24;  // 16M: 64 MiB of FP32
int64_t MaxInputElements(const ModelConfig& model);

// Checks the sizes the request's input shapes declare against `max_elements`, before any
// content is converted or the model runs. INVALID_ARGUMENT naming the input that takes the call
// over the limit, its shape, elements and bytes, and the limit; also for a negative dimension.
absl::Status CheckInputSizes(const inference::ModelInferRequest& request, int64_t max_elements);

// Converts every input of the request, in request order.
absl::StatusOr<std::vector<at::Tensor>> TensorsFromRequest(
    const inference::ModelInferRequest& request);

// Checks the converted inputs against the declared specs (count, datatype, shape with -1 as a
// wildcard) and returns them in declared order (matched by name; positional when a request name
// is not among the declared ones and the count matches). INVALID_ARGUMENT naming the input.
absl::StatusOr<std::vector<at::Tensor>> MatchInputs(const inference::ModelInferRequest& request,
                                                    std::vector<at::Tensor> tensors,
                                                    const std::vector<TensorSpec>& specs);

// The tensors of a forward() result: a tensor, or a tuple/list of tensors. INTERNAL otherwise.
absl::StatusOr<std::vector<at::Tensor>> TensorsFromResult(const c10::IValue& result);

// Names of `n` outputs: the declared names where given, else OUTPUT__i.
std::vector<std::string> OutputNames(const std::vector<TensorSpec>& declared, size_t n);

// Fills `response` with `outputs` as raw_output_contents (little-endian), with datatype and
// shape, keeping only the outputs `request.outputs` names (in that order) when it names any.
// INVALID_ARGUMENT for an unknown requested output, INTERNAL for an unsupported output dtype.
absl::Status FillResponse(const inference::ModelInferRequest& request,
                          const std::vector<at::Tensor>& outputs,
                          const std::vector<std::string>& names,
                          inference::ModelInferResponse* response);

class InferenceService final : public inference::GRPCInferenceService::Service {
 public:
  // `ready` tells whether the server takes work (false while draining); `board` (may be null)
  // is told when a job starts and ends so load reports stay fresh.
  InferenceService(ModelManager* models, std::function<bool()> ready, StatusBoard* board);
  // FOR TESTS ONLY: added to every ModelInfer call's reported units (the node config's
  // test_inflate_units, docs/metering.md). Atomic: tests change it while the server runs.
  void set_test_inflate_units(int64_t units) { test_inflate_units_.store(units); }

  grpc::Status ServerLive(grpc::ServerContext* context, const inference::ServerLiveRequest* request,
                          inference::ServerLiveResponse* response) override;
  grpc::Status ServerReady(grpc::ServerContext* context,
                           const inference::ServerReadyRequest* request,
                           inference::ServerReadyResponse* response) override;
  grpc::Status ModelReady(grpc::ServerContext* context, const inference::ModelReadyRequest* request,
                          inference::ModelReadyResponse* response) override;
  grpc::Status ServerMetadata(grpc::ServerContext* context,
                              const inference::ServerMetadataRequest* request,
                              inference::ServerMetadataResponse* response) override;
  grpc::Status ModelMetadata(grpc::ServerContext* context,
                             const inference::ModelMetadataRequest* request,
                             inference::ModelMetadataResponse* response) override;
  grpc::Status ModelInfer(grpc::ServerContext* context, const inference::ModelInferRequest* request,
                          inference::ModelInferResponse* response) override;

 private:
  ModelManager* models_;
  std::function<bool()> ready_;
  StatusBoard* board_;
  std::atomic<int64_t> test_inflate_units_{0};
};

}  // namespace switchyard::orchestrator

// In-process libtorch runner: a TorchScript module loaded on one device, and the process-wide
// libtorch settings. The threads that run it: runner/model_executor.h. libtorch exceptions never
// leave this library: they become absl statuses here.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <torch/script.h>

#include "absl/status/statusor.h"

namespace switchyard::runner {

// Sizes libtorch's intra-op and inter-op thread pools once per process (0 keeps libtorch's
// default). libtorch only allows this before the first parallel work, so later calls that ask
// for different sizes fail with FAILED_PRECONDITION.
absl::Status ConfigureTorchThreads(int intra_op_threads, int inter_op_threads);

// Parses "auto" (CUDA device 0 when this libtorch has CUDA and a device is present, else CPU),
// "cpu", "cuda" or "cuda:N". INVALID_ARGUMENT for anything else, UNAVAILABLE for a CUDA device
// this build or machine does not have.
absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec);

class TorchModel;
using TorchModelPtr = std::shared_ptr<TorchModel>;

// A TorchScript module loaded on one device, in eval mode. Forward is thread-safe.
class TorchModel {
 public:
  // NOT_FOUND if the file is missing; INVALID_ARGUMENT if it is not a loadable TorchScript
  // archive or has no forward method.
  static absl::StatusOr<TorchModelPtr> Load(const std::filesystem::path& path,
                                            const std::string& device);

  // Runs forward(input) under torch::InferenceMode; the input is moved to the model's device and
  // the result returned on the CPU. RESOURCE_EXHAUSTED on out-of-memory, INTERNAL for other
  // libtorch errors, INVALID_ARGUMENT when forward does not return a tensor.
  absl::StatusOr<at::Tensor> Forward(const at::Tensor& input);
  // Runs forward(*inputs) with any arguments; tensors in the result (also inside tuples, lists
  // and dicts) come back on the CPU. Errors as Forward.
  absl::StatusOr<c10::IValue> Run(std::vector<c10::IValue> inputs);
  // Runs another method of the module (e.g. a tokenizer's "encode"), like Run. NOT_FOUND if the
  // module has no such method.
  absl::StatusOr<c10::IValue> RunMethod(const std::string& method, std::vector<c10::IValue> inputs);
  bool HasMethod(const std::string& method) const;
  // Bytes of the module's parameters and buffers: a lower bound of its memory use.
  int64_t ParameterBytes() const;
  // Set once a call failed in a way that may have left the module or its device unusable (a CUDA
  // fault, a libtorch internal assert). The model manager then replaces the model with a fresh
  // load; the job that hit the error fails with INTERNAL.
  bool broken() const { return broken_.load(); }

  // An int attribute of the module (e.g. "scale"), if it has one.
  std::optional<int64_t> IntAttribute(const std::string& name) const;

  c10::Device device() const { return device_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  TorchModel(torch::jit::Module module, c10::Device device, std::filesystem::path path)
      : module_(std::move(module)), device_(device), path_(std::move(path)) {}

  // Turns a libtorch error into a status, marking the model broken when it may be.
  absl::Status Fail(const std::string& what, const std::string& where);

  torch::jit::Module module_;
  c10::Device device_;
  std::filesystem::path path_;
  std::atomic<bool> broken_{false};
};

}  // namespace switchyard::runner

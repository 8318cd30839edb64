#include "runner/torch_model.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace switchyard::runner {
namespace {

std::string ShortWhat(const c10::Error& e) { return e.what_without_backtrace(); }

// Errors after which the module or its device may be left in a bad state: CUDA faults poison the
// context, and a failed internal assert means libtorch itself is inconsistent. Ordinary errors
// (a shape mismatch, an exception the model raises) leave the module as it was.
bool MayBreakState(const std::string& what) {
  // TorchScript errors quote the model's source around the failing line; only the error itself,
  // the first unindented line after the last traceback header, says what happened.
  absl::string_view error = what;
  if (size_t tb = error.rfind("Traceback of TorchScript"); tb != absl::string_view::npos) {
    size_t line = error.find('\n', tb);
    while (line != absl::string_view::npos && line + 1 < error.size() &&
           (error[line + 1] == ' ' || error[line + 1] == '\n')) {
      line = error.find('\n', line + 1);
    }
    error = line == absl::string_view::npos ? absl::string_view() : error.substr(line + 1);
  }
  for (const char* marker :
       {"CUDA error", "CUDA kernel errors", "device-side assert", "illegal memory access",
        "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error", "INTERNAL ASSERT FAILED"}) {
    if (absl::StrContains(error, marker)) return true;
  }
  return false;
}

absl::Status TorchErrorToStatus(const std::string& what, const std::string& context) {
  if (absl::StrContains(what, "out of memory") || absl::StrContains(what, "CUDA out of memory") ||
      absl::StrContains(what, "DefaultCPUAllocator: can't allocate memory")) {
    return absl::ResourceExhaustedError(absl::StrCat(context, ": out of memory: ", what));
  }
  return absl::InternalError(absl::StrCat(context, ": ", what));
}

}  // namespace

absl::Status ConfigureTorchThreads(int intra_op_threads, int inter_op_threads) {
  static absl::Mutex mu(absl::kConstInit);
  static bool configured ABSL_GUARDED_BY(mu) = false;
  static int intra ABSL_GUARDED_BY(mu) = 0;
  static int inter ABSL_GUARDED_BY(mu) = 0;
  absl::MutexLock lock(&mu);
  if (configured) {
    if (intra == intra_op_threads && inter == inter_op_threads) return absl::OkStatus();
    return absl::FailedPreconditionError(
        "libtorch thread pools are already configured; they can be set once per process");
  }
  try {
    if (inter_op_threads > 0) at::set_num_interop_threads(inter_op_threads);
    if (intra_op_threads > 0) at::set_num_threads(intra_op_threads);
  } catch (const c10::Error& e) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot set libtorch thread pools: ", ShortWhat(e)));
  }
  configured = true;
  intra = intra_op_threads;
  inter = inter_op_threads;
  return absl::OkStatus();
}

absl::StatusOr<c10::Device> ResolveDevice(const std::string& spec) {
  if (spec == "cpu") return c10::Device(c10::kCPU);
  if (spec == "auto") {
    if (torch::cuda::is_available()) return c10::Device(c10::kCUDA, 0);
    return c10::Device(c10::kCPU);
  }
  int index = 0;
  if (spec == "cuda") {
    index = 0;
  } else if (absl::StartsWith(spec, "cuda:")) {
    if (!absl::SimpleAtoi(spec.substr(5), &index) || index < 0) {
      return absl::InvalidArgumentError(absl::StrCat("device '", spec, "': bad CUDA index"));
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", spec, "' is not one of auto, cpu, cuda, cuda:N"));
  }
  if (!torch::cuda::is_available()) {
    return absl::UnavailableError(absl::StrCat(
        "device '", spec, "': this libtorch build has no CUDA or no CUDA device is present"));
  }
  if (index >= static_cast<int>(torch::cuda::device_count())) {
    return absl::UnavailableError(
        absl::StrCat("device '", spec, "': only ", torch::cuda::device_count(), " CUDA device(s)"));
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

absl::StatusOr<TorchModelPtr> TorchModel::Load(const std::filesystem::path& path,
                                               const std::string& device_spec) {
  auto device = ResolveDevice(device_spec);
  if (!device.ok()) return device.status();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path.string(), ": model file not found"));
  }
  try {
    torch::jit::Module module = torch::jit::load(path.string(), *device);
    module.eval();
    if (!module.find_method("forward")) {
      return absl::InvalidArgumentError(
          absl::StrCat(path.string(), ": TorchScript module has no forward method"));
    }
    return TorchModelPtr(new TorchModel(std::move(module), *device, path));
  } catch (const c10::Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript archive: ", ShortWhat(e)));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path.string(), ": not a loadable TorchScript archive: ", e.what()));
  }
}

absl::Status TorchModel::Fail(const std::string& what, const std::string& where) {
  absl::Status status = TorchErrorToStatus(what, absl::StrCat(path_.filename().string(), where));
  if (MayBreakState(what)) {
    broken_.store(true);
    return absl::Status(status.code(),
                        absl::StrCat(status.message(), " (the model will be reloaded)"));
  }
  return status;
}

absl::StatusOr<at::Tensor> TorchModel::Forward(const at::Tensor& input) {
  try {
    c10::InferenceMode guard;
    std::vector<torch::jit::IValue> args{input.to(device_)};
    torch::jit::IValue out = module_.forward(args);
    if (!out.isTensor()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path_.string(), ": forward returned ", out.tagKind(), ", not a tensor"));
    }
    return out.toTensor().to(c10::kCPU);
  } catch (const c10::Error& e) {
    return Fail(ShortWhat(e), " forward");
  } catch (const std::exception& e) {
    return Fail(e.what(), " forward");
  }
}

namespace {

c10::IValue ToCpu(const c10::IValue& v) {
  if (v.isTensor()) return v.toTensor().to(c10::kCPU);
  if (v.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& e : v.toTupleRef().elements()) items.push_back(ToCpu(e));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  if (v.isTensorList()) {
    c10::List<at::Tensor> out;
    for (const at::Tensor& t : v.toTensorList()) out.push_back(t.to(c10::kCPU));
    return out;
  }
  if (v.isGenericDict()) {
    auto dict = v.toGenericDict();
    c10::impl::GenericDict out(dict.keyType(), dict.valueType());
    for (const auto& entry : dict) out.insert(entry.key(), ToCpu(entry.value()));
    return out;
  }
  return v;
}

}  // namespace

absl::StatusOr<c10::IValue> TorchModel::Run(std::vector<c10::IValue> inputs) {
  try {
    c10::InferenceMode guard;
    for (auto& v : inputs) {
      if (v.isTensor()) v = v.toTensor().to(device_);
    }
    return ToCpu(module_.forward(std::move(inputs)));
  } catch (const c10::Error& e) {
    return Fail(ShortWhat(e), " forward");
  } catch (const std::exception& e) {
    return Fail(e.what(), " forward");
  }
}

absl::StatusOr<c10::IValue> TorchModel::RunMethod(const std::string& method,
                                                  std::vector<c10::IValue> inputs) {
  if (method == "forward") return Run(std::move(inputs));
  try {
    auto m = module_.find_method(method);
    if (!m) {
      return absl::NotFoundError(
          absl::StrCat(path_.filename().string(), " has no method '", method, "'"));
    }
    c10::InferenceMode guard;
    for (auto& v : inputs) {
      if (v.isTensor()) v = v.toTensor().to(device_);
    }
    return ToCpu((*m)(std::move(inputs)));
  } catch (const c10::Error& e) {
    return Fail(ShortWhat(e), absl::StrCat(" ", method));
  } catch (const std::exception& e) {
    return Fail(e.what(), absl::StrCat(" ", method));
  }
}

int64_t TorchModel::ParameterBytes() const {
  int64_t bytes = 0;
  for (const auto& p : module_.parameters()) bytes += static_cast<int64_t>(p.nbytes());
  for (const auto& b : module_.buffers()) bytes += static_cast<int64_t>(b.nbytes());
  return bytes;
}

bool TorchModel::HasMethod(const std::string& method) const {
  return module_.find_method(method).has_value();
}

std::optional<int64_t> TorchModel::IntAttribute(const std::string& name) const {
  try {
    if (!module_.hasattr(name)) return std::nullopt;
    auto value = module_.attr(name);
    if (!value.isInt()) return std::nullopt;
    return value.toInt();
  } catch (const c10::Error&) {
    return std::nullopt;
  }
}

}  // namespace switchyard::runner

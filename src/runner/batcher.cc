#include "runner/batcher.h"

#include "absl/strings/str_cat.h"

namespace switchyard::runner {

at::Tensor Batcher::Stack(const std::vector<at::Tensor>& inputs) { return at::cat(inputs, 0); }

std::vector<absl::StatusOr<at::Tensor>> Batcher::Split(const absl::StatusOr<at::Tensor>& output,
                                                       size_t inputs,
                                                       const std::string& model_name) {
  absl::StatusOr<at::Tensor> out = output;
  if (out.ok() && (out->dim() < 1 || out->size(0) != static_cast<int64_t>(inputs))) {
    out = absl::InvalidArgumentError(absl::StrCat(model_name, ": batched forward returned ",
                                                  out->dim() < 1 ? 0 : out->size(0),
                                                  " results for ", inputs, " inputs"));
  }
  std::vector<absl::StatusOr<at::Tensor>> results;
  results.reserve(inputs);
  for (size_t i = 0; i < inputs; ++i) {
    if (!out.ok()) {
      results.emplace_back(out.status());
    } else {
      results.emplace_back(out->narrow(0, static_cast<int64_t>(i), 1).clone());
    }
  }
  return results;
}

}  // namespace switchyard::runner

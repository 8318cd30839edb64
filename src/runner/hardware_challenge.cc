#include "runner/hardware_challenge.h"

#include <torch/script.h>

#include "absl/strings/str_cat.h"
#include "common/hardware_challenge.h"
#include "runner/torch_model.h"

namespace switchyard::runner {
namespace {

// One operand, as ChallengeElement defines it, for every row and column at once (int64: no
// step of the arithmetic exceeds 2^47).
torch::Tensor Operand(int64_t stream, int size, const torch::Device& device) {
  const auto opts = torch::TensorOptions().dtype(torch::kInt64).device(device);
  const torch::Tensor rows = torch::arange(size, opts).view({size, 1});
  const torch::Tensor cols = torch::arange(size, opts).view({1, size});
  torch::Tensor x =
      (rows * int64_t{2654435761} + cols * int64_t{40503} + stream).remainder(kChallengeModulus);
  x = (x * int64_t{48271}).remainder(kChallengeModulus);
  x = (x * int64_t{48271}).remainder(kChallengeModulus);
  return x.remainder(int64_t{17}) - int64_t{8};
}

}  // namespace

absl::StatusOr<ChallengeAnswer> RunHardwareChallenge(
    const node::v1::HardwareChallengeRequest& request, const std::string& device_spec) {
  if (auto st = ValidateChallenge(request); !st.ok()) return st;
  auto device = ResolveDevice(device_spec);
  if (!device.ok()) return device.status();
  try {
    c10::InferenceMode guard;
    const int n = request.size();
    std::vector<torch::Tensor> left, right;
    for (int m = 0; m < request.matrices(); ++m) {
      left.push_back(Operand(ChallengeStream(request.seed(), m, 0), n, *device));
      right.push_back(Operand(ChallengeStream(request.seed(), m, 1), n, *device));
    }
    const torch::Tensor a = torch::stack(left).to(torch::kFloat32);
    const torch::Tensor b = torch::stack(right).to(torch::kFloat32);
    // Every product element is an integer of magnitude <= 64 x 1024 < 2^24: exact in float32.
    const torch::Tensor c = torch::bmm(a, b).round().to(torch::kInt32).to(torch::kCPU).contiguous();
    ChallengeAnswer answer;
    answer.device = device->str();
    const int64_t per = int64_t{n} * n;
    const int32_t* values = c.data_ptr<int32_t>();
    for (int m = 0; m < request.matrices(); ++m) {
      answer.digests.push_back(ChallengeProductDigest(values + m * per, per));
    }
    return answer;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("hardware challenge on ", device->str(), ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("hardware challenge on ", device->str(), ": ", e.what()));
  }
}

}  // namespace switchyard::runner

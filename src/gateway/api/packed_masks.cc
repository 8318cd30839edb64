#include "gateway/api/packed_masks.h"

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/float_tensor.h"

namespace switchyard::gateway {
namespace {

// The most values one answer's tensor may hold: 16 Mi (64 MiB packed), more than three masks of
// a 4096 x 1024 image. A node's message is bounded by max_message_bytes anyway; this bounds the
// JSON a gateway would print from it.
constexpr int64_t kMaxMaskValues = int64_t{16} << 20;

bool HasTensors(const v1::MasksResponse& r) {
  return r.has_masks_tensor() || r.has_scores_tensor() || r.has_logits_tensor();
}

}  // namespace

absl::Status CheckPackedMasks(const v1::MasksResponse& response) {
  if (!HasTensors(response)) return absl::OkStatus();
  if (!response.masks().empty() || !response.scores().empty() || !response.logits().empty()) {
    return absl::InvalidArgumentError("both JSON strings and packed tensors");
  }
  if (absl::Status st =
          CheckFloatTensor(response.masks_tensor(), "masks_tensor", 3, kMaxMaskValues);
      !st.ok()) {
    return st;
  }
  if (absl::Status st =
          CheckFloatTensor(response.scores_tensor(), "scores_tensor", 1, kMaxMaskValues);
      !st.ok()) {
    return st;
  }
  if (absl::Status st =
          CheckFloatTensor(response.logits_tensor(), "logits_tensor", 3, kMaxMaskValues);
      !st.ok()) {
    return st;
  }
  const int64_t k = response.masks_tensor().shape(0);
  if (k < 1 || response.scores_tensor().shape(0) != k || response.logits_tensor().shape(0) != k) {
    return absl::InvalidArgumentError(absl::StrCat(
        "masks_tensor, scores_tensor and logits_tensor disagree on the number of masks (", k, ", ",
        response.scores_tensor().shape(0), ", ", response.logits_tensor().shape(0),
        "; at least 1)"));
  }
  return absl::OkStatus();
}

absl::Status UnpackMasksToJson(v1::MasksResponse* response, int64_t max_bytes) {
  if (!HasTensors(*response)) return absl::OkStatus();
  // The budget is shared by the three strings, so the answer as a whole stays within it.
  int64_t left = max_bytes;
  const v1::FloatTensor* tensors[3] = {&response->masks_tensor(), &response->scores_tensor(),
                                       &response->logits_tensor()};
  std::string* strings[3] = {response->mutable_masks(), response->mutable_scores(),
                             response->mutable_logits()};
  const char* names[3] = {"masks", "scores", "logits"};
  for (int i = 0; i < 3; ++i) {
    auto json = FloatTensorToJson(*tensors[i], left);
    if (!json.ok()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the answer's ", names[i], " are too large to send as JSON: ", json.status().message(),
          " (max_message_bytes); ask for packed_tensors"));
    }
    left -= static_cast<int64_t>(json->size());
    *strings[i] = *std::move(json);
  }
  response->clear_masks_tensor();
  response->clear_scores_tensor();
  response->clear_logits_tensor();
  return absl::OkStatus();
}

}  // namespace switchyard::gateway

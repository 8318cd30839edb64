#include "gateway/api/packed_masks.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/float_tensor.h"

namespace switchyard::gateway {
namespace {

v1::FloatTensor Packed(std::vector<int64_t> shape, const std::vector<float>& values) {
  v1::FloatTensor t;
  PackFloatTensor(values.data(), shape, &t);
  return t;
}

v1::MasksResponse Answer(int64_t k) {
  v1::MasksResponse r;
  *r.mutable_masks_tensor() = Packed({k, 1, 2}, std::vector<float>(2 * k, 0.5f));
  *r.mutable_scores_tensor() = Packed({k}, std::vector<float>(k, 1));
  *r.mutable_logits_tensor() = Packed({k, 2, 1}, std::vector<float>(2 * k, -2));
  return r;
}

TEST(PackedMasksTest, JsonAnswersPassUnchecked) {
  v1::MasksResponse r;
  r.set_masks("[[[1]]]");
  r.set_scores("[1]");
  EXPECT_TRUE(CheckPackedMasks(r).ok());
  EXPECT_TRUE(UnpackMasksToJson(&r, 100).ok());
  EXPECT_EQ(r.masks(), "[[[1]]]");
}

TEST(PackedMasksTest, PackedAnswersArePrintedAsTheLivepeerStrings) {
  v1::MasksResponse r = Answer(2);
  ASSERT_TRUE(CheckPackedMasks(r).ok());
  ASSERT_TRUE(UnpackMasksToJson(&r, 1 << 20).ok());
  EXPECT_EQ(r.masks(), "[[[0.5,0.5]],[[0.5,0.5]]]");
  EXPECT_EQ(r.scores(), "[1,1]");
  EXPECT_EQ(r.logits(), "[[[-2],[-2]],[[-2],[-2]]]");
  EXPECT_FALSE(r.has_masks_tensor() || r.has_scores_tensor() || r.has_logits_tensor());
}

TEST(PackedMasksTest, InconsistentAnswersAreRefused) {
  auto message = [](const v1::MasksResponse& r) {
    absl::Status st = CheckPackedMasks(r);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    return std::string(st.message());
  };
  v1::MasksResponse r = Answer(2);
  r.set_masks("[]");
  EXPECT_EQ(message(r), "both JSON strings and packed tensors");
  r = Answer(2);
  *r.mutable_scores_tensor() = Packed({3}, {1, 1, 1});
  EXPECT_NE(message(r).find("disagree on the number of masks (2, 3, 2"), std::string::npos);
  r = Answer(0);
  EXPECT_NE(message(r).find("(0, 0, 0; at least 1)"), std::string::npos);
  r = Answer(1);
  r.clear_logits_tensor();  // only two of the three
  EXPECT_EQ(message(r), "logits_tensor has 0 dimensions, expected 3");
  r = Answer(1);
  r.mutable_masks_tensor()->add_shape(1);
  EXPECT_EQ(message(r), "masks_tensor has 4 dimensions, expected 3");
  r = Answer(1);
  r.mutable_masks_tensor()->set_shape(1, int64_t{1} << 30);
  EXPECT_NE(message(r).find("masks_tensor has a dimension of 1073741824"), std::string::npos);
}

// The three strings share one budget (max_message_bytes): an answer over it is
// RESOURCE_EXHAUSTED telling the client to ask for packed tensors.
TEST(PackedMasksTest, JsonOverTheBudgetIsRefused) {
  v1::MasksResponse r = Answer(2);
  // masks 25 + scores 5 + logits 25 bytes.
  v1::MasksResponse fits = r;
  EXPECT_TRUE(UnpackMasksToJson(&fits, 55).ok());
  absl::Status st = UnpackMasksToJson(&r, 54);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(st.message().find("logits are too large to send as JSON"), std::string::npos) << st;
  EXPECT_NE(st.message().find("packed_tensors"), std::string::npos) << st;
}

}  // namespace
}  // namespace switchyard::gateway

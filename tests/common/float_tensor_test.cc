#include "common/float_tensor.h"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace switchyard {
namespace {

v1::FloatTensor Packed(std::vector<int64_t> shape, const std::vector<float>& values) {
  v1::FloatTensor t;
  PackFloatTensor(values.data(), shape, &t);
  return t;
}

TEST(FloatTensorTest, JsonIsNestedShortestRoundTripNumbers) {
  const std::vector<float> v = {0.1f, -2.0f, 3.5f, 0.0f, 1e-7f, 16777216.0f};
  std::string out;
  AppendFloatsAsJson(v.data(), std::vector<int64_t>{2, 3}, false, &out);
  EXPECT_EQ(out, "[[0.1,-2,3.5],[0,1e-07,16777216]]");
  out.clear();
  AppendFloatsAsJson(v.data(), std::vector<int64_t>{3, 2}, true, &out);
  EXPECT_EQ(out, "[[1,0],[1,0],[1,1]]");
  out.clear();
  const float special[] = {std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::infinity(), -0.0f};
  AppendFloatsAsJson(special, std::vector<int64_t>{3}, false, &out);
  EXPECT_EQ(out, "[null,null,-0]");
  out.clear();
  AppendFloatsAsJson(v.data(), std::vector<int64_t>{}, false, &out);  // a scalar
  EXPECT_EQ(out, "0.1");
  out.clear();
  AppendFloatsAsJson(v.data(), std::vector<int64_t>{2, 0}, false, &out);
  EXPECT_EQ(out, "[[],[]]");
}

// Packed and printed back, every value reads as the same float (shortest round trip), for
// seeded random values over the whole float range.
TEST(FloatTensorTest, PackedValuesPrintAndParseBackExactly) {
  std::mt19937 rng(7);
  std::vector<float> values(3 * 17 * 5);
  for (float& v : values) {
    uint32_t bits = rng();
    std::memcpy(&v, &bits, 4);
    if (!std::isfinite(v)) v = 1.5f;
  }
  const v1::FloatTensor t = Packed({3, 17, 5}, values);
  ASSERT_TRUE(CheckFloatTensor(t, "t", 3, 1000).ok());
  auto json = FloatTensorToJson(t, 1 << 20);
  ASSERT_TRUE(json.ok()) << json.status();
  const auto parsed = nlohmann::json::parse(*json);
  size_t i = 0;
  for (const auto& plane : parsed) {
    for (const auto& row : plane) {
      for (const auto& x : row) {
        ASSERT_LT(i, values.size());
        EXPECT_EQ(static_cast<float>(x.get<double>()), values[i]) << "value " << i;
        ++i;
      }
    }
  }
  EXPECT_EQ(i, values.size());
}

TEST(FloatTensorTest, CheckRefusesWhatDoesNotFitTheShape) {
  const v1::FloatTensor good = Packed({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_TRUE(CheckFloatTensor(good, "masks", 2, 6).ok());

  auto message = [](const v1::FloatTensor& t, int dims, int64_t max) {
    absl::Status st = CheckFloatTensor(t, "masks", dims, max);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    return std::string(st.message());
  };
  EXPECT_EQ(message(good, 3, 6), "masks has 2 dimensions, expected 3");
  EXPECT_EQ(message(good, 2, 5), "masks has a dimension of 3 (at most 5 values in all)");
  v1::FloatTensor t = good;
  t.mutable_data()->pop_back();
  EXPECT_EQ(message(t, 2, 6), "masks holds 23 bytes for 6 float32 values (4 bytes each)");
  t = good;
  t.set_shape(0, -2);
  t.set_shape(1, -3);
  EXPECT_NE(message(t, 2, 1 << 20).find("dimension of -2"), std::string::npos);
  // Dimensions whose product overflows int64 are refused before multiplying out.
  t = good;
  t.set_shape(0, int64_t{1} << 40);
  t.set_shape(1, int64_t{1} << 40);
  EXPECT_NE(message(t, 2, 1 << 20).find("dimension of 1099511627776"), std::string::npos);
  t.set_shape(0, std::numeric_limits<int64_t>::max());
  t.set_shape(1, std::numeric_limits<int64_t>::max());
  EXPECT_NE(
      message(t, 2, std::numeric_limits<int64_t>::max()).find("dimension of 9223372036854775807"),
      std::string::npos);
  // 4 x 2^62 values wraps around to 0 bytes in 64 bits: still refused.
  t.clear_shape();
  t.add_shape(int64_t{1} << 62);
  t.clear_data();
  EXPECT_EQ(message(t, 1, std::numeric_limits<int64_t>::max()),
            "masks holds 0 bytes for 4611686018427387904 float32 values (4 bytes each)");
}

// The JSON is bounded: a tensor whose text would pass the limit is refused, before it is
// printed when even its shortest form is too long, and as soon as it passes it otherwise.
TEST(FloatTensorTest, JsonLargerThanTheLimitIsRefused) {
  std::vector<float> values(1000, 0.123456f);
  const v1::FloatTensor t = Packed({10, 100}, values);
  auto fits = FloatTensorToJson(t, 1 << 20);
  ASSERT_TRUE(fits.ok());
  EXPECT_EQ(fits->size(), 1000u * 8 + 999 + 10 * 2 + 2);  // values, commas, rows' and outer []
  auto over = FloatTensorToJson(t, static_cast<int64_t>(fits->size()) - 1);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FloatTensorToJson(t, 1999).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(FloatTensorToJson(t, static_cast<int64_t>(fits->size())).ok());
}

// Printing does not rely on the caller's check: a tensor whose data does not fill its shape, or
// whose shape overflows, is refused, never read past its end.
TEST(FloatTensorTest, JsonOfAnUncheckedTensorIsRefusedNotRead) {
  v1::FloatTensor t = Packed({2, 3}, {1, 2, 3, 4, 5, 6});
  t.mutable_data()->resize(8);
  EXPECT_EQ(FloatTensorToJson(t, 1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
  t.set_shape(0, int64_t{1} << 62);
  t.set_shape(1, 4);
  EXPECT_EQ(FloatTensorToJson(t, 1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
  t.clear_shape();
  for (int i = 0; i < kMaxFloatTensorDims + 1; ++i) t.add_shape(1);
  t.mutable_data()->assign(4, '\0');
  EXPECT_EQ(FloatTensorToJson(t, 1 << 20).status().code(), absl::StatusCode::kInvalidArgument);
}

// Seeded mutations of a valid tensor: each is refused or printed, never read out of bounds
// (run under the sanitizers too).
TEST(FloatTensorTest, MutatedTensorsAreRefusedOrPrinted) {
  std::mt19937 rng(11);
  const v1::FloatTensor base = Packed({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  int refused = 0, printed = 0;
  for (int i = 0; i < 2000; ++i) {
    v1::FloatTensor t = base;
    switch (rng() % 4) {
      case 0:
        t.set_shape(rng() % 3, static_cast<int64_t>(rng() % 9) - 2);
        break;
      case 1:
        t.mutable_data()->resize(rng() % 64);
        break;
      case 2:
        t.add_shape(static_cast<int64_t>(rng() % 4));
        break;
      default:
        t.set_shape(rng() % 3, static_cast<int64_t>(rng()) << (rng() % 32));
        break;
    }
    if (!CheckFloatTensor(t, "t", t.shape_size() == 3 ? 3 : 4, 1 << 16).ok()) {
      ++refused;
      continue;
    }
    auto json = FloatTensorToJson(t, 1 << 16);
    ASSERT_TRUE(json.ok()) << json.status();
    EXPECT_TRUE(nlohmann::json::accept(*json)) << *json;
    ++printed;
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(printed, 0);
}

}  // namespace
}  // namespace switchyard

#include "orchestrator/pipelines/tensor_image.h"

#include <cmath>
#include <cstring>
#include <limits>

#include <gtest/gtest.h>

namespace switchyard::orchestrator {
namespace {

// The conversion the pipelines used before the one-pass loop, as torch's own operators: the
// reference the loop must match byte for byte.
at::Tensor TorchReference(const at::Tensor& nchw) {
  return at::nan_to_num(nchw.to(at::kFloat), 0.0, 255.0, 0.0)
      .clamp(0, 255)
      .round()
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous();
}

// Random values over -40..300 plus the edge cases: NaN, both infinities, exact halves (ties
// round to even), values just below and above the clamps.
at::Tensor MakeHostileImages(int64_t n, int64_t h, int64_t w) {
  at::manual_seed(7);
  at::Tensor t = at::rand({n, 3, h, w}, at::kFloat) * 340.0 - 40.0;
  float* p = t.data_ptr<float>();
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            0.5f, 1.5f, 2.5f, 254.5f, 253.5f, 127.5f, -0.5f, -0.0f, 0.49999997f,
                            254.99f, 255.0f, 255.5f, 1e30f, -1e30f, 3.4e38f};
  const int64_t count = t.numel();
  for (int64_t i = 0; i < count; i += 7) p[i] = specials[(i / 7) % std::size(specials)];
  return t;
}

TEST(TensorImageTest, MatchesTorchsOperatorsByteForByte) {
  const at::Tensor images = MakeHostileImages(2, 17, 23);
  auto ours = TensorsToRgb24(images);
  ASSERT_TRUE(ours.ok()) << ours.status();
  const at::Tensor expected = TorchReference(images);
  ASSERT_EQ(ours->sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(*ours, expected));
}

TEST(TensorImageTest, OneImageIsInterleavedRgbInRowOrder) {
  const at::Tensor images = MakeHostileImages(1, 9, 5);
  auto image = TensorToImage(images[0]);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 5);
  EXPECT_EQ(image->height, 9);
  const at::Tensor expected = TorchReference(images)[0];
  ASSERT_EQ(image->pixels.size(), static_cast<size_t>(expected.numel()));
  EXPECT_EQ(0, std::memcmp(image->pixels.data(), expected.data_ptr<uint8_t>(),
                           image->pixels.size()));
}

TEST(TensorImageTest, StridedAndOtherDtypesAreConverted) {
  // A channels-last view and a double tensor: the model's output layout is not ours to choose.
  const at::Tensor base = MakeHostileImages(1, 8, 6);
  const at::Tensor channels_last = base.contiguous(at::MemoryFormat::ChannelsLast);
  auto a = TensorsToRgb24(channels_last);
  auto b = TensorsToRgb24(base.to(at::kDouble));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(at::equal(*a, TorchReference(base)));
  // Doubles rounded to float first: equal except where the double -> float step itself moves a
  // value across a half, which these do not do.
  EXPECT_TRUE(at::equal(*b, TorchReference(base)));
}

TEST(TensorImageTest, WrongShapesAreInternalErrors) {
  EXPECT_EQ(TensorToImage(at::zeros({4, 2, 2})).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(TensorToImage(at::zeros({1, 3, 2, 2})).status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(TensorsToRgb24(at::zeros({3, 2, 2})).status().code(), absl::StatusCode::kInternal);
  auto status = TensorsToRgb24(at::zeros({1, 1, 2, 2})).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_NE(status.message().find("[1, 1, 2, 2]"), std::string::npos) << status;
}

TEST(TensorImageTest, PixelsToModelInputMatchTorchsOperators) {
  // 211x157: an odd size over ATen's 32768-element grain, so the reference runs its parallel
  // copy and the loop has no round tail.
  media::RgbImage image;
  image.width = 211;
  image.height = 157;
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  uint32_t state = 12345;
  for (uint8_t& p : image.pixels) {
    state = state * 1664525u + 1013904223u;
    p = static_cast<uint8_t>(state >> 24);
  }
  image.pixels[0] = 0;
  image.pixels[1] = 255;
  const at::Tensor expected =
      at::from_blob(image.pixels.data(), {image.height, image.width, 3}, at::kByte)
          .permute({2, 0, 1})
          .unsqueeze(0)
          .to(at::kFloat);
  const at::Tensor ours = Rgb24ToTensor(image);
  EXPECT_EQ(ours.scalar_type(), at::kFloat);
  EXPECT_TRUE(ours.is_contiguous());
  ASSERT_EQ(ours.sizes(), expected.sizes());
  EXPECT_TRUE(at::equal(ours, expected));
  // Channel order: the first pixel's R and G planes.
  EXPECT_EQ(ours[0][0][0][0].item<float>(), 0.0f);
  EXPECT_EQ(ours[0][1][0][0].item<float>(), 255.0f);

  // The result owns its memory.
  const at::Tensor copy = ours.clone();
  image.pixels.assign(image.pixels.size(), 9);
  EXPECT_TRUE(at::equal(ours, copy));
}

}  // namespace
}  // namespace switchyard::orchestrator

#include "common/media/image_codec.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/media_fixtures.h"

namespace switchyard::media {
namespace {

using ::switchyard::testing::MakeTestImage;
using ::switchyard::testing::MakeTestImageWithPixFmt;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

constexpr int64_t kMaxPixels = 4096 * 4096;

// Mean absolute difference per channel value between two same-size images.
double MeanAbsDiff(const RgbImage& a, const RgbImage& b) {
  EXPECT_EQ(a.pixels.size(), b.pixels.size());
  if (a.pixels.size() != b.pixels.size() || a.pixels.empty()) return 1e9;
  double sum = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) sum += std::abs(a.pixels[i] - b.pixels[i]);
  return sum / static_cast<double>(a.pixels.size());
}

// An image with a gradient and some hard edges, so round-trips exercise every channel.
RgbImage MakePattern(int width, int height) {
  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      uint8_t* p = &image.pixels[(static_cast<size_t>(y) * width + x) * 3];
      p[0] = static_cast<uint8_t>(x * 255 / (width > 1 ? width - 1 : 1));
      p[1] = static_cast<uint8_t>(y * 255 / (height > 1 ? height - 1 : 1));
      p[2] = static_cast<uint8_t>(((x / 4 + y / 4) % 2) * 200 + (x * y) % 55);
    }
  }
  return image;
}

class ImageCodecTest : public ::testing::Test {
 protected:
  TempDir dir_;
};

TEST_F(ImageCodecTest, DecodesPngToRightSize) {
  auto image = DecodeImage(MakeTestImage(dir_, 64, 48, "png"), kMaxPixels);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 64);
  EXPECT_EQ(image->height, 48);
  EXPECT_EQ(image->pixels.size(), 64u * 48u * 3u);
}

TEST_F(ImageCodecTest, JpegDecodesToApproximatelyThePngPixels) {
  auto png = DecodeImage(MakeTestImage(dir_, 96, 64, "png"), kMaxPixels);
  auto jpeg = DecodeImage(MakeTestImage(dir_, 96, 64, "jpg"), kMaxPixels);
  ASSERT_TRUE(png.ok()) << png.status();
  ASSERT_TRUE(jpeg.ok()) << jpeg.status();
  EXPECT_EQ(jpeg->width, 96);
  EXPECT_EQ(jpeg->height, 64);
  // testsrc2 has sharp edges and text; JPEG's chroma subsampling smears them a bit, but a wrong
  // color matrix, range or channel order would be far off.
  EXPECT_LT(MeanAbsDiff(*png, *jpeg), 12.0);
}

TEST_F(ImageCodecTest, PngRoundTripIsExact) {
  RgbImage original = MakePattern(37, 23);  // odd sizes on purpose
  auto encoded = EncodePng(original);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  EXPECT_EQ(encoded->substr(1, 3), "PNG");
  auto decoded = DecodeImage(*encoded, kMaxPixels);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, original.width);
  EXPECT_EQ(decoded->height, original.height);
  EXPECT_EQ(decoded->pixels, original.pixels);
}

// EncodePng filters each row against the one above ("up"): here every row is the first row plus
// its index, so the filtered rows are all ones and deflate to almost nothing, while the unfiltered
// rows (pseudo-random bytes, each row shifted) would not compress. It also round-trips exactly.
TEST_F(ImageCodecTest, PngRowsAreFilteredAgainstTheRowAbove) {
  RgbImage image;
  image.width = 256;
  image.height = 256;
  const size_t row = static_cast<size_t>(image.width) * 3;
  image.pixels.resize(row * image.height);
  uint32_t state = 12345;
  for (size_t i = 0; i < row; ++i) {
    state = state * 1664525u + 1013904223u;  // deterministic pseudo-random first row
    image.pixels[i] = static_cast<uint8_t>(state >> 24);
  }
  for (int y = 1; y < image.height; ++y) {
    for (size_t i = 0; i < row; ++i) {
      image.pixels[y * row + i] = static_cast<uint8_t>(image.pixels[i] + y);
    }
  }
  auto encoded = EncodePng(image);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  // The first row (768 incompressible bytes) plus a few hundred for the rest; unfiltered, the
  // output is about the raw 196,608 bytes.
  EXPECT_LT(encoded->size(), 4096u);
  auto decoded = DecodeImage(*encoded, kMaxPixels);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->pixels, image.pixels);
}

// The ffmpeg command line (its own demuxer and decoder, with CRC checks on) reads the same
// pixels back: the chunks, their CRCs and the zlib stream are valid PNG, not just readable by
// our decoder.
TEST_F(ImageCodecTest, EncodedPngDecodesWithFfmpegCli) {
  RgbImage image = MakePattern(203, 61);
  uint32_t state = 99;
  for (size_t i = 0; i < image.pixels.size(); i += 5) {  // some noise so deflate has work to do
    state = state * 1664525u + 1013904223u;
    image.pixels[i] = static_cast<uint8_t>(state >> 24);
  }
  auto encoded = EncodePng(image);
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  auto path = dir_.path() / "out.png";
  auto raw = dir_.path() / "out.rgb";
  switchyard::testing::WriteFile(path, *encoded);
  std::string log;
  ASSERT_EQ(
      switchyard::testing::RunCommand(
          "ffprobe -v error -show_entries stream=width,height -of csv=p=0 " + path.string(), &log),
      0)
      << log;
  EXPECT_THAT(log, HasSubstr("203,61"));
  ASSERT_EQ(switchyard::testing::RunCommand("ffmpeg -v error -err_detect crccheck+explode -i " +
                                                path.string() + " -f rawvideo -pix_fmt rgb24 " +
                                                raw.string(),
                                            &log),
            0)
      << log;
  const std::string pixels = switchyard::testing::ReadFile(raw);
  ASSERT_EQ(pixels.size(), image.pixels.size());
  EXPECT_EQ(0, std::memcmp(pixels.data(), image.pixels.data(), pixels.size()));
}

TEST_F(ImageCodecTest, DecodesGrayPng) {
  auto rgb = DecodeImage(MakeTestImage(dir_, 40, 30, "png"), kMaxPixels);
  auto gray = DecodeImage(MakeTestImageWithPixFmt(dir_, 40, 30, "png", "gray"), kMaxPixels);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_TRUE(gray.ok()) << gray.status();
  EXPECT_EQ(gray->width, 40);
  EXPECT_EQ(gray->height, 30);
  for (size_t i = 0; i < gray->pixels.size(); i += 3) {
    ASSERT_EQ(gray->pixels[i], gray->pixels[i + 1]);
    ASSERT_EQ(gray->pixels[i], gray->pixels[i + 2]);
  }
  // The gray image is the luma of the color one: same structure, roughly the same brightness.
  double luma_diff = 0;
  for (size_t i = 0; i < gray->pixels.size(); i += 3) {
    const double y =
        0.299 * rgb->pixels[i] + 0.587 * rgb->pixels[i + 1] + 0.114 * rgb->pixels[i + 2];
    luma_diff += std::abs(y - gray->pixels[i]);
  }
  EXPECT_LT(luma_diff / (gray->pixels.size() / 3), 20.0);
}

TEST_F(ImageCodecTest, DecodesRgbaPngDroppingAlpha) {
  auto rgb = DecodeImage(MakeTestImage(dir_, 40, 30, "png"), kMaxPixels);
  auto rgba = DecodeImage(MakeTestImageWithPixFmt(dir_, 40, 30, "png", "rgba"), kMaxPixels);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_TRUE(rgba.ok()) << rgba.status();
  EXPECT_EQ(rgba->width, 40);
  EXPECT_EQ(rgba->height, 30);
  EXPECT_EQ(rgba->pixels, rgb->pixels);
}

TEST_F(ImageCodecTest, Decodes16BitPng) {
  auto rgb = DecodeImage(MakeTestImage(dir_, 40, 30, "png"), kMaxPixels);
  auto deep = DecodeImage(MakeTestImageWithPixFmt(dir_, 40, 30, "png", "rgb48be"), kMaxPixels);
  ASSERT_TRUE(rgb.ok()) << rgb.status();
  ASSERT_TRUE(deep.ok()) << deep.status();
  EXPECT_LT(MeanAbsDiff(*rgb, *deep), 1.0);
}

TEST_F(ImageCodecTest, DecodesPalettePng) {
  auto pal = DecodeImage(MakeTestImageWithPixFmt(dir_, 40, 30, "png", "pal8"), kMaxPixels);
  ASSERT_TRUE(pal.ok()) << pal.status();
  EXPECT_EQ(pal->width, 40);
  EXPECT_EQ(pal->height, 30);
}

TEST_F(ImageCodecTest, EmptyIsInvalidArgument) {
  auto image = DecodeImage("", kMaxPixels);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("empty"));
}

TEST_F(ImageCodecTest, GarbageIsInvalidArgument) {
  std::string garbage(1000, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<char>((i * 7919) % 251);
  auto image = DecodeImage(garbage, kMaxPixels);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("unknown image format"));
}

TEST_F(ImageCodecTest, GarbageAfterMagicIsInvalidArgument) {
  std::string png = MakeTestImage(dir_, 32, 32, "png");
  std::string jpg = MakeTestImage(dir_, 32, 32, "jpg");
  for (const std::string& good : {png, jpg}) {
    for (size_t keep : {size_t{3}, size_t{8}, size_t{30}, good.size() / 2}) {
      std::string bad = good.substr(0, keep);
      for (size_t i = keep; i < good.size(); ++i) bad.push_back(static_cast<char>(i * 31 % 256));
      auto image = DecodeImage(bad, kMaxPixels);
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << "kept " << keep << " bytes: " << image.status();
    }
  }
}

TEST_F(ImageCodecTest, TruncatedIsInvalidArgument) {
  std::string png = MakeTestImage(dir_, 64, 48, "png");
  std::string jpg = MakeTestImage(dir_, 64, 48, "jpg");
  for (const std::string& good : {png, jpg}) {
    for (size_t keep :
         {size_t{4}, size_t{20}, size_t{100}, good.size() / 2, good.size() - 12, good.size() - 2}) {
      auto image = DecodeImage(good.substr(0, keep), kMaxPixels);
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument)
          << "kept " << keep << " of " << good.size() << " bytes: " << image.status();
    }
  }
}

TEST_F(ImageCodecTest, CorruptPngChecksumIsInvalidArgument) {
  std::string png = MakeTestImage(dir_, 64, 48, "png");
  png[png.size() / 2] ^= 0x5a;  // inside IDAT: its CRC no longer matches
  auto image = DecodeImage(png, kMaxPixels);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ImageCodecTest, TooManyPixelsIsInvalidArgument) {
  for (const char* format : {"png", "jpg"}) {
    std::string data = MakeTestImage(dir_, 64, 48, format);
    auto image = DecodeImage(data, 64 * 48 - 1);
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << format;
    EXPECT_THAT(image.status().message(), HasSubstr("64x48")) << format;
    EXPECT_TRUE(DecodeImage(data, 64 * 48).ok()) << format;
  }
}

TEST_F(ImageCodecTest, HugeHeaderIsRejectedBeforeDecoding) {
  // A PNG header claiming 100000x100000 pixels and nothing else.
  RgbImage tiny = MakePattern(2, 2);
  auto png = EncodePng(tiny);
  ASSERT_TRUE(png.ok());
  std::string data = *png;
  const unsigned char size[8] = {0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0};
  data.replace(16, 8, reinterpret_cast<const char*>(size), 8);
  auto image = DecodeImage(data, kMaxPixels);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("100000x100000"));
}

TEST_F(ImageCodecTest, EncodeRejectsMismatchedBuffer) {
  RgbImage image = MakePattern(8, 8);
  image.pixels.pop_back();
  EXPECT_EQ(EncodePng(image).status().code(), absl::StatusCode::kInvalidArgument);
  RgbImage empty;
  EXPECT_EQ(EncodePng(empty).status().code(), absl::StatusCode::kInvalidArgument);
  RgbImage negative;
  negative.width = -2;
  negative.height = -2;
  negative.pixels.resize(12);
  EXPECT_EQ(EncodePng(negative).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::media

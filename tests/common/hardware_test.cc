#include "common/media/hardware.h"

#include <gtest/gtest.h>

#include <chrono>

namespace switchyard::media {
namespace {

// The probe must be safe and quick everywhere; what it finds depends on the machine, so the test
// checks consistency, not presence.
TEST(VideoHardware, ProbeIsQuickConsistentAndCached) {
  const auto start = std::chrono::steady_clock::now();
  const VideoHardware& hw = ProbeVideoHardware();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  EXPECT_EQ(&hw, &ProbeVideoHardware());
  // Nothing on the GPU without a CUDA device.
  if (!hw.cuda) {
    EXPECT_FALSE(hw.nvdec_h264);
    EXPECT_FALSE(hw.nvdec_hevc);
    EXPECT_FALSE(hw.nvenc_h264);
    EXPECT_TRUE(hw.Names().empty());
    EXPECT_FALSE(hw.detail.empty()) << "a missing device should say why";
  } else {
    EXPECT_EQ(hw.Names().front(), "cuda");
  }
}

TEST(VideoHardware, NamesListWhatWasFound) {
  VideoHardware hw;
  EXPECT_TRUE(hw.Names().empty());
  hw.cuda = true;
  hw.nvdec_h264 = true;
  hw.nvenc_h264 = true;
  EXPECT_EQ(hw.Names(), (std::vector<std::string>{"cuda", "nvdec-h264", "nvenc-h264"}));
}

}  // namespace
}  // namespace switchyard::media

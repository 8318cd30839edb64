#include "orchestrator/transcoder_fixture.h"

#include <algorithm>

namespace switchyard::orchestrator::transcoder_test {

using ::switchyard::testing::Demux;
using ::switchyard::testing::TestRendition;

RenditionSpec Spec(int width, int height, int fps_num, int fps_den) {
  return TestRendition(width, height, 300'000, fps_num, fps_den);
}

std::string Ext(const std::string& container) { return container == "mp4" ? "mp4" : "ts"; }

Demuxed CheckOutput(const RenditionOutput& out, const std::string& what) {
  Demuxed d = Demux(out.data);
  EXPECT_EQ(d.error, "") << what << " " << out.spec.name;
  EXPECT_EQ(static_cast<int64_t>(d.video_dts.size()), out.frames) << what << " " << out.spec.name;
  if (!d.video_key.empty()) {
    EXPECT_TRUE(d.video_key[0]) << what << " " << out.spec.name;
  }
  if (out.frames > 0) {
    EXPECT_EQ(d.width, out.width) << what;
    EXPECT_EQ(d.height, out.height) << what;
  }
  return d;
}

void ExpectEvenlySpaced(const Demuxed& d, double rate, const std::string& what) {
  std::vector<double> pts = d.video_pts;
  std::sort(pts.begin(), pts.end());
  for (size_t i = 1; i < pts.size(); ++i) {
    ASSERT_NEAR(pts[i] - pts[i - 1], 1.0 / rate, 0.0005) << what << " frame " << i;
  }
}

}  // namespace switchyard::orchestrator::transcoder_test

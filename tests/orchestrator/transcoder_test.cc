#include "orchestrator/transcoder.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::MakeTestSegmentWithArgs;
using ::switchyard::testing::ProbeFrames;
using ::switchyard::testing::ProbePacketDts;
using ::switchyard::testing::ProbeStreamCount;
using ::switchyard::testing::ProbeVideo;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

RenditionSpec Spec(int width, int height, int fps_num = 0, int fps_den = 0) {
  RenditionSpec spec;
  spec.width = width;
  spec.height = height;
  spec.bitrate_bps = 300'000;
  spec.fps_num = fps_num;
  spec.fps_den = fps_den;
  spec.preset = "ultrafast";
  return spec;
}

std::string Ext(const std::string& container) { return container == "mp4" ? "mp4" : "ts"; }

class TranscoderTest : public ::testing::Test {
 protected:
  // The 2 s, 30 fps, 320x240 MPEG-TS segment most tests use.
  const std::string& Segment() {
    if (segment_.empty()) segment_ = MakeTestSegment(dir_, SegmentSpec{});
    return segment_;
  }

  // Transcoding must succeed; checks each output with ffprobe against the reported facts.
  TranscodeResult TranscodeOk(const std::string& input, const std::vector<RenditionSpec>& ladder,
                              const TranscodeOptions& options = {}) {
    auto result = TranscodeSegment(input, ladder, options);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return {};
    EXPECT_EQ(result->renditions.size(), ladder.size());
    for (const RenditionOutput& out : result->renditions) {
      auto probe = ProbeVideo(dir_, out.data, Ext(options.container));
      EXPECT_TRUE(probe.ok) << out.spec.name << ": " << probe.error;
      EXPECT_EQ(probe.codec, "h264") << out.spec.name;
      EXPECT_EQ(probe.width, out.width) << out.spec.name;
      EXPECT_EQ(probe.height, out.height) << out.spec.name;
      EXPECT_EQ(probe.frames, out.frames) << out.spec.name;
    }
    return *std::move(result);
  }

  TempDir dir_;
  std::string segment_;
};

TEST_F(TranscoderTest, ThreeRenditionLadderFromTs) {
  std::vector<RenditionSpec> ladder = {Spec(256, 144), Spec(160, 90, 15, 1), Spec(0, 0, 60, 1)};
  const std::string& input = Segment();
  const auto start = std::chrono::steady_clock::now();
  TranscodeResult result = TranscodeOk(input, ladder);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("[ TIMING   ] 2 s 320x240 segment -> 3 renditions: %.3f s\n", seconds);
  ASSERT_EQ(result.renditions.size(), 3u);
  EXPECT_EQ(result.input_frames, 60);
  EXPECT_NEAR(result.duration_seconds, 2.0, 0.01);

  const auto& r = result.renditions;
  EXPECT_EQ(r[0].width, 256);
  EXPECT_EQ(r[0].height, 144);
  EXPECT_EQ(r[0].frames, 60);
  EXPECT_EQ(r[0].spec.name, "144p");
  EXPECT_EQ(r[0].spec.gop_seconds, 2.0);
  EXPECT_EQ(r[1].width, 160);
  EXPECT_EQ(r[1].height, 90);
  EXPECT_EQ(r[1].frames, 30);
  EXPECT_EQ(r[2].width, 320);
  EXPECT_EQ(r[2].height, 240);
  EXPECT_EQ(r[2].frames, 120);
  EXPECT_EQ(r[2].spec.width, 320);
  EXPECT_EQ(r[2].spec.height, 240);
}

TEST_F(TranscoderTest, DefaultsAreFilledIn) {
  RenditionSpec spec;
  spec.height = 120;
  spec.bitrate_bps = 200'000;
  spec.preset = "";
  spec.profile = "";
  auto result = TranscodeSegment(Segment(), {spec}, {});
  ASSERT_TRUE(result.ok()) << result.status();
  const RenditionSpec& filled = result->renditions[0].spec;
  EXPECT_EQ(filled.name, "120p");
  EXPECT_EQ(filled.width, 160);
  EXPECT_EQ(filled.preset, "veryfast");
  EXPECT_EQ(filled.profile, "main");
  EXPECT_EQ(filled.gop_seconds, 2.0);
}

TEST_F(TranscoderTest, Mp4InputAndFragmentedMp4Output) {
  SegmentSpec spec;
  spec.container = "mp4";
  const std::string input = MakeTestSegment(dir_, spec);
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions options;
    options.container = container;
    TranscodeResult result = TranscodeOk(input, {Spec(160, 120), Spec(0, 60, 15, 1)}, options);
    ASSERT_EQ(result.renditions.size(), 2u) << container;
    EXPECT_EQ(result.input_frames, 60) << container;
    EXPECT_EQ(result.renditions[0].frames, 60) << container;
    EXPECT_EQ(result.renditions[1].frames, 30) << container;
    EXPECT_EQ(result.renditions[1].width, 80) << container;
  }
}

TEST_F(TranscoderTest, FragmentedMp4OutputIsFragmented) {
  TranscodeOptions options;
  options.container = "mp4";
  TranscodeResult result = TranscodeOk(Segment(), {Spec(160, 120)}, options);
  ASSERT_EQ(result.renditions.size(), 1u);
  const std::string& data = result.renditions[0].data;
  EXPECT_NE(data.find("moof"), std::string::npos);
  EXPECT_NE(data.find("mvex"), std::string::npos);
}

TEST_F(TranscoderTest, AudioIsCopiedIntoEveryRendition) {
  for (const char* in_container : {"mpegts", "mp4"}) {
    SegmentSpec spec;
    spec.audio = true;
    spec.container = in_container;
    const std::string input = MakeTestSegment(dir_, spec);
    for (const char* container : {"mpegts", "mp4"}) {
      TranscodeOptions options;
      options.container = container;
      TranscodeResult result = TranscodeOk(input, {Spec(160, 120), Spec(96, 72, 15, 1)}, options);
      ASSERT_EQ(result.renditions.size(), 2u);
      EXPECT_EQ(result.renditions[0].frames, 60);
      EXPECT_EQ(result.renditions[1].frames, 30);
      for (const RenditionOutput& out : result.renditions) {
        EXPECT_EQ(ProbeStreamCount(dir_, out.data, Ext(container), "audio"), 1)
            << in_container << " -> " << container << " " << out.spec.name;
        EXPECT_GT(ProbePacketDts(dir_, out.data, Ext(container), "a:0").size(), 80u)
            << in_container << " -> " << container << " " << out.spec.name;
      }
    }
  }
}

TEST_F(TranscoderTest, OddPortraitInputKeepsAspect) {
  // testsrc (not testsrc2) keeps odd sizes; 4:4:4 lets libx264 encode an odd width.
  const std::string input = MakeTestSegmentWithArgs(
      dir_, 123, 456, "30", 1.0, "-c:v libx264 -preset ultrafast -pix_fmt yuv444p -f mpegts", "ts",
      "testsrc");
  auto probe = ProbeVideo(dir_, input, "ts");
  ASSERT_EQ(probe.width, 123);
  ASSERT_EQ(probe.height, 456);
  TranscodeResult result = TranscodeOk(input, {Spec(0, 228), Spec(100, 0), Spec(0, 0)});
  ASSERT_EQ(result.renditions.size(), 3u);
  EXPECT_EQ(result.renditions[0].width, 62);  // 228 * 123 / 456 = 61.5
  EXPECT_EQ(result.renditions[0].height, 228);
  EXPECT_EQ(result.renditions[1].width, 100);
  EXPECT_EQ(result.renditions[1].height, 370);  // 100 * 456 / 123 = 370.7
  EXPECT_EQ(result.renditions[2].width % 2, 0);
  EXPECT_EQ(result.renditions[2].height, 456);
  for (const auto& out : result.renditions) EXPECT_EQ(out.frames, 30);
}

TEST_F(TranscoderTest, EveryOutputStartsWithAnIdrFrame) {
  // A source with keyframes every second, transcoded with a 0.5 s GOP at a lower rate.
  SegmentSpec spec;
  spec.gop_seconds = 1.0;
  const std::string input = MakeTestSegment(dir_, spec);
  RenditionSpec short_gop = Spec(160, 120, 20, 1);
  short_gop.gop_seconds = 0.5;
  short_gop.preset = "veryfast";  // B-frames on
  short_gop.profile = "high";
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions options;
    options.container = container;
    TranscodeResult result = TranscodeOk(input, {short_gop, Spec(128, 96)}, options);
    for (const RenditionOutput& out : result.renditions) {
      std::string error;
      auto frames = ProbeFrames(dir_, out.data, Ext(container), &error);
      ASSERT_FALSE(frames.empty()) << error;
      EXPECT_TRUE(frames[0].key_frame) << container << " " << out.spec.name;
      EXPECT_EQ(frames[0].pict_type, "I") << container << " " << out.spec.name;
      if (out.spec.gop_seconds == 0.5) {
        int keyframes = 0;
        for (const auto& f : frames) keyframes += f.key_frame ? 1 : 0;
        EXPECT_EQ(keyframes, 4) << container;  // 40 frames, GOP of 10
      }
    }
  }
}

TEST_F(TranscoderTest, ConsecutiveSegmentsHaveIncreasingTimestamps) {
  // One 4 s stream cut into two 2 s segments at its keyframes.
  const std::string whole = MakeTestSegmentWithArgs(
      dir_, 160, 120, "30", 4.0,
      "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -force_key_frames 'expr:gte(t,n_forced*2)' "
      "-f mpegts",
      "ts");
  const auto whole_path = dir_.path() / "whole.ts";
  switchyard::testing::WriteFile(whole_path, whole);
  std::string log;
  ASSERT_EQ(switchyard::testing::RunCommand(
                "ffmpeg -nostdin -loglevel error -y -i " + whole_path.string() +
                    " -c copy -f segment -segment_time 2 -segment_format mpegts " +
                    (dir_.path() / "part%d.ts").string(),
                &log),
            0)
      << log;
  const std::string part0 = switchyard::testing::ReadFile(dir_.path() / "part0.ts");
  const std::string part1 = switchyard::testing::ReadFile(dir_.path() / "part1.ts");
  RenditionSpec spec = Spec(96, 72, 25, 1);
  spec.preset = "veryfast";  // B-frames: DTS before PTS
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions options;
    options.container = container;
    auto out0 = TranscodeSegment(part0, {spec}, options);
    auto out1 = TranscodeSegment(part1, {spec}, options);
    ASSERT_TRUE(out0.ok()) << out0.status();
    ASSERT_TRUE(out1.ok()) << out1.status();
    EXPECT_EQ(out0->renditions[0].frames + out1->renditions[0].frames, 100) << container;
    auto dts0 = ProbePacketDts(dir_, out0->renditions[0].data, Ext(container), "v:0");
    auto dts1 = ProbePacketDts(dir_, out1->renditions[0].data, Ext(container), "v:0");
    ASSERT_FALSE(dts0.empty());
    ASSERT_FALSE(dts1.empty());
    for (size_t i = 1; i < dts0.size(); ++i) ASSERT_GT(dts0[i], dts0[i - 1]) << container;
    for (size_t i = 1; i < dts1.size(); ++i) ASSERT_GT(dts1[i], dts1[i - 1]) << container;
    EXPECT_LT(dts0.back(), dts1.front()) << container;
    EXPECT_NEAR(dts1.front() - dts0.front(), 2.0, 0.05) << container;
  }
}

TEST_F(TranscoderTest, BadLadderEntriesAreInvalidArgument) {
  struct Case {
    RenditionSpec spec;
    std::string field;
  };
  std::vector<Case> cases;
  auto add = [&](auto mutate, const std::string& field) {
    RenditionSpec spec = Spec(160, 120);
    mutate(spec);
    cases.push_back({spec, field});
  };
  add([](RenditionSpec& s) { s.width = 161; }, "width");
  add([](RenditionSpec& s) { s.width = -2; }, "width");
  add([](RenditionSpec& s) { s.height = 121; }, "height");
  add([](RenditionSpec& s) { s.height = -120; }, "height");
  add([](RenditionSpec& s) { s.width = 4000; }, "width");
  add([](RenditionSpec& s) { s.height = 8192; }, "height");
  add([](RenditionSpec& s) { s.bitrate_bps = 0; }, "bitrate_bps");
  add([](RenditionSpec& s) { s.bitrate_bps = -5; }, "bitrate_bps");
  add([](RenditionSpec& s) { s.fps_num = 30; }, "fps_num/fps_den");
  add([](RenditionSpec& s) { s.fps_den = 1; }, "fps_num/fps_den");
  add(
      [](RenditionSpec& s) {
        s.fps_num = -30;
        s.fps_den = 1;
      },
      "fps_num/fps_den");
  add(
      [](RenditionSpec& s) {
        s.fps_num = 1000;
        s.fps_den = 1;
      },
      "fps_num/fps_den");
  add([](RenditionSpec& s) { s.gop_seconds = -1; }, "gop_seconds");
  add([](RenditionSpec& s) { s.gop_seconds = 1e9; }, "gop_seconds");
  add([](RenditionSpec& s) { s.preset = "bogus"; }, "preset");
  add([](RenditionSpec& s) { s.profile = "high10"; }, "profile");
  for (const Case& c : cases) {
    // The bad entry is second: the message must name its index.
    auto result = TranscodeSegment(Segment(), {Spec(160, 120), c.spec}, {});
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(result.status().message(), HasSubstr("renditions[1]." + c.field));
  }

  // Derived sizes are checked too: 3000 high from a 4:3 input is 4000 wide.
  TranscodeOptions options;
  options.max_width = 3840;
  auto result = TranscodeSegment(Segment(), {Spec(0, 3000)}, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("renditions[0].width"));
}

TEST_F(TranscoderTest, EmptyOrOversizedLadderIsInvalidArgument) {
  auto empty = TranscodeSegment(Segment(), {}, {});
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(empty.status().message(), HasSubstr("empty"));

  std::vector<RenditionSpec> nine(9, Spec(64, 48));
  auto too_many = TranscodeSegment(Segment(), nine, {});
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr("limit of 8"));

  TranscodeOptions options;
  options.container = "avi";
  auto bad_container = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(bad_container.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_container.status().message(), HasSubstr("container"));
}

TEST_F(TranscoderTest, BadInputsAreInvalidArgument) {
  std::string garbage(200'000, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) {
    garbage[i] = static_cast<char>((i * 2654435761u) >> 13);
  }
  SegmentSpec mp4_spec;
  mp4_spec.container = "mp4";
  const std::string mp4 = MakeTestSegment(dir_, mp4_spec);
  const std::string& ts = Segment();
  // Audio only: no video stream.
  const auto audio_path = dir_.path() / "audio-only.ts";
  std::string log;
  ASSERT_EQ(
      switchyard::testing::RunCommand(
          "ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=duration=1 -c:a aac -f mpegts " +
              audio_path.string(),
          &log),
      0)
      << log;
  const std::string audio_only = switchyard::testing::ReadFile(audio_path);
  struct Case {
    std::string name;
    std::string data;
  };
  std::vector<Case> cases = {
      {"empty", ""},
      {"garbage", garbage},
      {"ts sync byte then garbage", "\x47" + garbage},
      {"ts first 2 KB", ts.substr(0, 2048)},
      {"ts half, cut mid-packet", ts.substr(0, ts.size() / 2 + 100)},
      {"ts missing the last byte", ts.substr(0, ts.size() - 1)},
      {"mp4 first 1 KB", mp4.substr(0, 1024)},
      {"mp4 half", mp4.substr(0, mp4.size() / 2)},
      {"mp4 missing the last byte", mp4.substr(0, mp4.size() - 1)},
      {"audio only", audio_only},
  };
  for (const Case& c : cases) {
    auto result = TranscodeSegment(c.data, {Spec(64, 48)}, {});
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << result.status();
    EXPECT_THAT(result.status().message(), HasSubstr("segment")) << c.name;
  }
  // Corrupted bytes in the middle of a segment: never a crash; either a clean error or output.
  for (size_t start : {size_t{10'000}, ts.size() / 2}) {
    std::string corrupt = ts;
    for (size_t i = start; i < start + 5000 && i < corrupt.size(); ++i) corrupt[i] ^= 0x55;
    auto result = TranscodeSegment(corrupt, {Spec(64, 48)}, {});
    if (!result.ok()) {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    }
  }
}

TEST_F(TranscoderTest, RandomCorruptionNeverCrashes) {
  SegmentSpec spec;
  spec.width = 96;
  spec.height = 64;
  spec.seconds = 1;
  spec.audio = true;
  const std::string ts = MakeTestSegment(dir_, spec);
  spec.container = "mp4";
  const std::string mp4 = MakeTestSegment(dir_, spec);
  std::mt19937 rng(1234);
  int ok = 0;
  for (int iteration = 0; iteration < 40; ++iteration) {
    std::string data = iteration % 2 == 0 ? ts : mp4;
    const int flips = 1 + static_cast<int>(rng() % 64);
    for (int i = 0; i < flips; ++i) data[rng() % data.size()] ^= static_cast<char>(1 + rng() % 255);
    if (iteration % 5 == 0) data.resize(rng() % data.size());
    TranscodeOptions options;
    options.container = iteration % 3 == 0 ? "mp4" : "mpegts";
    auto result = TranscodeSegment(data, {Spec(64, 48), Spec(32, 24, 50, 1)}, options);
    if (result.ok()) {
      ++ok;
      EXPECT_GT(result->renditions[0].frames, 0);
    } else {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    }
  }
  std::printf("[ INFO     ] %d of 40 corrupted inputs still transcoded\n", ok);
}

TEST_F(TranscoderTest, InputLimitsAreInvalidArgument) {
  TranscodeOptions options;
  options.max_input_bytes = 1000;
  auto too_big = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);

  options = {};
  options.max_width = 300;
  auto too_wide = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(too_wide.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_wide.status().message(), HasSubstr("320x240"));

  options = {};
  options.max_input_frames = 10;
  auto too_long = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TranscoderTest, CancellationReturnsCancelled) {
  const std::string& input = Segment();
  auto now = TranscodeSegment(input, {Spec(64, 48)}, {}, [] { return true; });
  EXPECT_EQ(now.status().code(), absl::StatusCode::kCancelled);

  std::atomic<int> polls{0};
  auto later = TranscodeSegment(input, {Spec(64, 48), Spec(96, 72, 60, 1)}, {},
                                [&] { return ++polls > 40; });
  EXPECT_EQ(later.status().code(), absl::StatusCode::kCancelled);
  EXPECT_GT(polls.load(), 40);
}

TEST_F(TranscoderTest, ConcurrentTranscodesBothSucceed) {
  const std::string& ts = Segment();
  SegmentSpec spec;
  spec.container = "mp4";
  spec.audio = true;
  const std::string mp4 = MakeTestSegment(dir_, spec);
  absl::StatusOr<TranscodeResult> a, b;
  std::thread ta([&] { a = TranscodeSegment(ts, {Spec(160, 120), Spec(96, 72, 15, 1)}, {}); });
  std::thread tb([&] {
    TranscodeOptions options;
    options.container = "mp4";
    b = TranscodeSegment(mp4, {Spec(128, 96), Spec(0, 60)}, options);
  });
  ta.join();
  tb.join();
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->renditions[0].frames, 60);
  EXPECT_EQ(a->renditions[1].frames, 30);
  EXPECT_EQ(b->renditions[0].frames, 60);
  EXPECT_EQ(b->renditions[1].width, 80);
  EXPECT_TRUE(ProbeVideo(dir_, a->renditions[1].data, "ts").ok);
  EXPECT_TRUE(ProbeVideo(dir_, b->renditions[1].data, "mp4").ok);
}

}  // namespace
}  // namespace switchyard::orchestrator

// TranscodeSegment's outputs: ladders, containers, audio, timing, threads and hardware.
#include "orchestrator/transcode/transcoder.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/media/ffmpeg_util.h"
#include "common/media/hardware.h"
#include "orchestrator/transcoder_fixture.h"
#include "support/media_fixtures.h"

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::Demux;
using ::switchyard::testing::Demuxed;
using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::MakeTestSegmentWithArgs;
using ::switchyard::testing::ProbeFrames;
using ::switchyard::testing::ProbePacketDts;
using ::switchyard::testing::ProbeStreamCount;
using ::switchyard::testing::ProbeVideo;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;
using transcoder_test::CheckOutput;
using transcoder_test::ExpectEvenlySpaced;
using transcoder_test::Ext;
using transcoder_test::Spec;
using transcoder_test::TranscoderTest;

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

// The renditions of a segment are encoded on threads of their own by default; the outputs must be
// the same bytes as one after another on the caller's thread (same frames, same audio, same order).
TEST_F(TranscoderTest, ParallelRenditionsGiveTheSameBytesAsSerial) {
  SegmentSpec spec;
  spec.audio = true;
  const std::string input = MakeTestSegment(dir_, spec);
  const std::vector<RenditionSpec> ladder = {Spec(160, 120), Spec(96, 72, 15, 1),
                                             Spec(0, 60, 60, 1)};
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions serial;
    serial.container = container;
    serial.parallel_renditions = false;
    TranscodeOptions parallel = serial;
    parallel.parallel_renditions = true;
    TranscodeResult a = TranscodeOk(input, ladder, serial);
    TranscodeResult b = TranscodeOk(input, ladder, parallel);
    ASSERT_EQ(a.renditions.size(), 3u);
    ASSERT_EQ(b.renditions.size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(a.renditions[i].frames, b.renditions[i].frames) << container << " " << i;
      EXPECT_GT(ProbePacketDts(dir_, b.renditions[i].data, Ext(container), "a:0").size(), 80u)
          << container << " " << i;
      EXPECT_TRUE(a.renditions[i].data == b.renditions[i].data)
          << container << " rendition " << i << ": " << a.renditions[i].data.size() << " vs "
          << b.renditions[i].data.size() << " bytes";
    }
  }
}

// The "auto" thread policy, pinned (8 cores, one segment in flight: frame-threaded decoding and
// several libx264 threads per rendition): the plan is reported and the output guarantees hold
// (IDR first, the GOP, every frame) on every run. The bytes of a plan with several libx264 threads
// are not compared between runs: libx264's frame-threaded rate control under VBV depends on
// thread timing (the ffmpeg CLI's `-threads 5 -maxrate ... -bufsize ...` gives a different
// stream on most runs too); the one-thread plan of a busy node is bit-exact, and checked.
TEST_F(TranscoderTest, AutoThreadPlanKeepsTheGuaranteesAndTheBusyPlanIsDeterministic) {
  SegmentSpec spec;
  spec.gop_seconds = 1.0;
  spec.audio = true;
  const std::string input = MakeTestSegment(dir_, spec);
  RenditionSpec big = Spec(160, 120);
  big.gop_seconds = 0.5;
  const std::vector<RenditionSpec> ladder = {big, Spec(96, 72), Spec(64, 48)};
  TranscodeOptions options;
  options.thread_policy = "auto";
  options.cores = 8;
  options.segments_in_flight = 1;
  TranscodeResult a = TranscodeOk(input, ladder, options);
  TranscodeResult b = TranscodeOk(input, ladder, options);
  EXPECT_EQ(a.thread_plan, "decoder 2, encoders 5/3/2 (8 cores, 1 segment in flight)");
  TranscodeOptions fixed;
  TranscodeResult f = TranscodeOk(input, ladder, fixed);
  EXPECT_EQ(f.thread_plan, "fixed: decoder 1, encoders 1/1/1");
  ASSERT_EQ(a.renditions.size(), 3u);
  ASSERT_EQ(b.renditions.size(), 3u);
  for (const TranscodeResult* run : {&a, &b}) {
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(run->renditions[i].frames, f.renditions[i].frames) << "rendition " << i;
      std::string error;
      auto frames = ProbeFrames(dir_, run->renditions[i].data, "ts", &error);
      ASSERT_FALSE(frames.empty()) << error;
      EXPECT_TRUE(frames[0].key_frame) << i;
      EXPECT_EQ(frames[0].pict_type, "I") << i;
      EXPECT_EQ(static_cast<int64_t>(frames.size()), run->renditions[i].frames) << i;
      if (i == 0) {
        std::vector<size_t> keyframes;
        for (size_t k = 0; k < frames.size(); ++k) {
          if (frames[k].key_frame) keyframes.push_back(k);
        }
        std::vector<size_t> every_15;
        for (size_t k = 0; k < frames.size(); k += 15) every_15.push_back(k);
        EXPECT_EQ(keyframes, every_15) << "a 0.5 s GOP at 30 fps";
      }
    }
  }
  // A busy node (as many segments as cores) runs as the fixed plan does.
  options.segments_in_flight = 8;
  TranscodeResult busy = TranscodeOk(input, ladder, options);
  EXPECT_EQ(busy.thread_plan, "decoder 1, encoders 1/1/1 (8 cores, 8 segments in flight)");
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(busy.renditions[i].data == f.renditions[i].data) << "rendition " << i;
  }
  options.thread_policy = "sometimes";
  EXPECT_EQ(TranscodeSegment(input, ladder, options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// PSNR (the psnr filter's average over Y, U and V) of the video in `out` against `source`
// scaled to width x height with the scale filter's bicubic; NaN when it cannot be measured.
double PsnrAgainstSource(const TempDir& dir, const std::string& out, const std::string& source,
                         int width, int height, const std::string& tag) {
  const auto out_path = dir.path() / absl::StrCat("psnr-", tag, ".ts");
  const auto source_path = dir.path() / absl::StrCat("psnr-", tag, "-source.ts");
  switchyard::testing::WriteFile(out_path, out);
  switchyard::testing::WriteFile(source_path, source);
  std::string log;
  const int rc = switchyard::testing::RunCommand(
      absl::StrCat("ffmpeg -nostdin -hide_banner -nostats -i ", out_path.string(), " -i ",
                   source_path.string(), " -lavfi \"[1:v]scale=", width, ":", height,
                   ":flags=bicubic[ref];[0:v][ref]psnr\" -f null - 2>&1"),
      &log);
  const size_t at = log.rfind("average:");
  if (rc != 0 || at == std::string::npos) {
    ADD_FAILURE() << "psnr of " << tag << " failed: " << log;
    return NAN;
  }
  return std::strtod(log.c_str() + at + 8, nullptr);
}

// scale_from_larger (off by default): each decoded frame is scaled once to the largest rendition
// that keeps every frame and is no larger than the input, and the renditions no larger than it
// are made from that frame. The base rendition and those not made from it come out as the same
// bytes as without it; the others show the same picture (PSNR against the source scaled straight
// to their size above 40 dB, at most 3.5 dB under scaling from the decoded frame: these tiny,
// nearly lossless renditions magnify the second pass's softening), the output guarantees hold,
// and the result is deterministic and the same in serial.
TEST_F(TranscoderTest, SmallerRenditionsAreScaledFromTheLargestAndKeepTheirQuality) {
  SegmentSpec spec;
  spec.audio = true;
  const std::string input = MakeTestSegment(dir_, spec);  // 320x240
  const std::vector<RenditionSpec> ladder = {Spec(96, 72), Spec(160, 120), Spec(64, 48, 15, 1),
                                             Spec(400, 300), Spec(100, 160)};
  TranscodeOptions on;
  on.scale_from_larger = true;
  TranscodeOptions off;
  EXPECT_FALSE(off.scale_from_larger) << "the default";
  TranscodeOptions on_serial = on;
  on_serial.parallel_renditions = false;
  TranscodeResult a = TranscodeOk(input, ladder, on);
  TranscodeResult again = TranscodeOk(input, ladder, on);
  TranscodeResult serial = TranscodeOk(input, ladder, on_serial);
  TranscodeResult b = TranscodeOk(input, ladder, off);
  // The base is 160x120 (400x300 is larger than the input; 100x160 is taller than the base).
  EXPECT_EQ(a.scale_plan, "72p, 48p from 120p's scaled frame");
  EXPECT_EQ(b.scale_plan, "each from the decoded frame");
  ASSERT_EQ(a.renditions.size(), ladder.size());
  ASSERT_EQ(b.renditions.size(), ladder.size());
  for (size_t i = 0; i < ladder.size(); ++i) {
    const std::string what = absl::StrCat("rendition ", i);
    EXPECT_TRUE(a.renditions[i].data == again.renditions[i].data) << what;
    EXPECT_TRUE(a.renditions[i].data == serial.renditions[i].data) << what;
    EXPECT_EQ(a.renditions[i].frames, b.renditions[i].frames) << what;
    std::string error;
    auto frames = ProbeFrames(dir_, a.renditions[i].data, "ts", &error);
    ASSERT_FALSE(frames.empty()) << what << ": " << error;
    EXPECT_TRUE(frames[0].key_frame) << what;
    EXPECT_EQ(static_cast<int64_t>(frames.size()), a.renditions[i].frames) << what;
  }
  for (size_t i : {1u, 3u, 4u}) {
    EXPECT_TRUE(a.renditions[i].data == b.renditions[i].data) << "rendition " << i;
  }
  for (size_t i : {0u, 2u}) {
    const int w = a.renditions[i].width, h = a.renditions[i].height;
    const double from_base =
        PsnrAgainstSource(dir_, a.renditions[i].data, input, w, h, absl::StrCat("on", i));
    const double from_decoded =
        PsnrAgainstSource(dir_, b.renditions[i].data, input, w, h, absl::StrCat("off", i));
    EXPECT_GT(from_base, 40.0) << "rendition " << i;
    EXPECT_GT(from_base, from_decoded - 3.5) << "rendition " << i;
    EXPECT_LT(from_base, from_decoded) << "rendition " << i << ": not made from the base?";
  }
}

// One rendition failing while the others run on their threads: the segment fails with that
// rendition's error (no hang, no partial result), and the transcoder is usable again at once.
TEST_F(TranscoderTest, ARenditionFailingInParallelFailsTheSegment) {
  const std::string& input = Segment();
  TranscodeOptions options;
  options.max_output_frames = 90;  // 60 frames at 30 fps fit; 120 at 60 fps do not
  const auto start = std::chrono::steady_clock::now();
  auto result = TranscodeSegment(input, {Spec(64, 48), Spec(96, 72, 60, 1), Spec(32, 24)}, options);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_THAT(std::string(result.status().message()), HasSubstr("more than 90 frames"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  TranscodeResult ok = TranscodeOk(input, {Spec(64, 48), Spec(32, 24)}, options);
  EXPECT_EQ(ok.renditions[0].frames, 60);
}

// audio_codec "aac": the input's audio (here MP2 at 44.1 kHz) is decoded once and re-encoded to
// AAC for every rendition, on the serial and on the parallel path.
TEST_F(TranscoderTest, AudioIsReencodedToAacWhenAsked) {
  SegmentSpec spec;
  spec.audio = true;
  spec.audio_codec = "mp2";
  spec.audio_rate = 44100;
  const std::string mp2 = MakeTestSegment(dir_, spec);
  for (const char* container : {"mpegts", "mp4"}) {
    {
      const bool parallel = std::string(container) == "mp4";
      TranscodeOptions options;
      options.container = container;
      options.audio_codec = "aac";
      options.audio_bitrate_bps = 96'000;
      options.parallel_renditions = parallel;
      TranscodeResult result = TranscodeOk(mp2, {Spec(160, 120), Spec(96, 72, 15, 1)}, options);
      for (const RenditionOutput& out : result.renditions) {
        const std::string what =
            std::string(container) + " " + out.spec.name + (parallel ? " parallel" : " serial");
        TempDir probe_dir;
        const std::filesystem::path file = probe_dir.path() / ("out." + Ext(container));
        switchyard::testing::WriteFile(file, out.data);
        std::string log;
        ASSERT_EQ(
            switchyard::testing::RunCommand("ffprobe -v error -select_streams a:0 -show_entries "
                                            "stream=codec_name,sample_rate,channels -of csv=p=0 " +
                                                file.string(),
                                            &log),
            0)
            << log;
        EXPECT_THAT(log, HasSubstr("aac,44100,1")) << what;
        // 2 s of 44.1 kHz audio in 1024-sample AAC frames: about 86 (a frame or two of priming).
        const std::vector<double> dts = ProbePacketDts(dir_, out.data, Ext(container), "a:0");
        EXPECT_GE(dts.size(), 84u) << what;
        EXPECT_LE(dts.size(), 90u) << what;
        EXPECT_TRUE(std::is_sorted(dts.begin(), dts.end())) << what;
        // Decodes cleanly.
        ASSERT_EQ(switchyard::testing::RunCommand("ffmpeg -nostdin -v error -xerror -i " +
                                                      file.string() + " -map 0:a -f null -",
                                                  &log),
                  0)
            << what << ": " << log;
      }
    }
  }
  TranscodeOptions bad;
  bad.audio_codec = "opus";
  auto status = TranscodeSegment(mp2, {Spec(160, 120)}, bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("audio_codec"));
  bad.audio_codec = "aac";
  bad.audio_bitrate_bps = 1'000'000;
  status = TranscodeSegment(mp2, {Spec(160, 120)}, bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("audio_bitrate_bps"));
}

// hw_decode: "none" decodes in software; "auto" uses the GPU when this machine has one and falls
// back to software otherwise (then the outputs are the same bytes); "cuda" insists.
TEST_F(TranscoderTest, HardwareDecodeWhenPresentSoftwareOtherwise) {
  const std::string& input = Segment();
  const std::vector<RenditionSpec> ladder = {Spec(160, 120), Spec(96, 72, 15, 1)};
  TranscodeOptions software;
  software.hw_decode = "none";
  TranscodeResult sw = TranscodeOk(input, ladder, software);
  EXPECT_FALSE(sw.hardware_decoded);

  TranscodeOptions automatic;
  automatic.hw_decode = "auto";
  TranscodeResult au = TranscodeOk(input, ladder, automatic);
  EXPECT_EQ(au.input_frames, sw.input_frames);
  for (size_t i = 0; i < ladder.size(); ++i) {
    EXPECT_EQ(au.renditions[i].frames, sw.renditions[i].frames) << i;
  }

  TranscodeOptions cuda;
  cuda.hw_decode = "cuda";
  auto forced = TranscodeSegment(input, ladder, cuda);
  if (media::SharedCudaDevice() == nullptr) {
    EXPECT_FALSE(au.hardware_decoded);
    for (size_t i = 0; i < ladder.size(); ++i) {
      EXPECT_TRUE(au.renditions[i].data == sw.renditions[i].data) << i;
    }
    EXPECT_EQ(forced.status().code(), absl::StatusCode::kFailedPrecondition) << forced.status();
    EXPECT_THAT(std::string(forced.status().message()), HasSubstr("no CUDA device"));
  } else {
    // A GPU machine: both decode there and give every frame.
    EXPECT_TRUE(au.hardware_decoded);
    ASSERT_TRUE(forced.ok()) << forced.status();
    EXPECT_TRUE(forced->hardware_decoded);
    EXPECT_EQ(forced->renditions[0].frames, sw.renditions[0].frames);
  }

  TranscodeOptions bad;
  bad.hw_decode = "vaapi";
  auto status = TranscodeSegment(input, ladder, bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("hw_decode"));
}

// hw_encode: "none" encodes with libx264; "auto" uses NVENC when the GPU has one (not an
// H100/H200) and libx264 otherwise (then the outputs are the same bytes as "none"); "nvenc"
// insists. On an NVENC machine the outputs keep the contract: IDR first, exact GOP, DTS rising.
TEST_F(TranscoderTest, HardwareEncodeWhenPresentLibx264Otherwise) {
  const std::string& input = Segment();
  RenditionSpec gop = Spec(160, 120, 20, 1);
  gop.gop_seconds = 0.5;
  RenditionSpec intra = Spec(96, 72);
  intra.intra_only = true;
  const std::vector<RenditionSpec> ladder = {gop, intra};
  TranscodeOptions software;
  software.hw_encode = "none";
  TranscodeResult sw = TranscodeOk(input, ladder, software);
  EXPECT_FALSE(sw.hardware_encoded);

  TranscodeOptions automatic;  // the default
  EXPECT_EQ(automatic.hw_encode, "auto");
  TranscodeResult au = TranscodeOk(input, ladder, automatic);
  TranscodeOptions nvenc;
  nvenc.hw_encode = "nvenc";
  auto forced = TranscodeSegment(input, ladder, nvenc);
  if (!media::ProbeVideoHardware().nvenc_h264) {
    EXPECT_FALSE(au.hardware_encoded);
    for (size_t i = 0; i < ladder.size(); ++i) {
      EXPECT_TRUE(au.renditions[i].data == sw.renditions[i].data) << i;
    }
    EXPECT_EQ(forced.status().code(), absl::StatusCode::kFailedPrecondition) << forced.status();
    EXPECT_THAT(std::string(forced.status().message()), HasSubstr("NVENC"));
  } else {
    EXPECT_TRUE(au.hardware_encoded);
    ASSERT_TRUE(forced.ok()) << forced.status();
    EXPECT_TRUE(forced->hardware_encoded);
    for (const TranscodeResult* result : {&au, &*forced}) {
      for (size_t i = 0; i < ladder.size(); ++i) {
        const RenditionOutput& out = result->renditions[i];
        EXPECT_EQ(out.frames, sw.renditions[i].frames) << i;
        CheckOutput(out, "nvenc");
        std::string error;
        auto frames = ProbeFrames(dir_, out.data, "ts", &error);
        ASSERT_FALSE(frames.empty()) << error;
        EXPECT_EQ(frames[0].pict_type, "I") << i;
        int keyframes = 0;
        for (const auto& f : frames) keyframes += f.key_frame ? 1 : 0;
        const int expected =
            i == 0 ? static_cast<int>((out.frames + 9) / 10) : static_cast<int>(out.frames);
        EXPECT_EQ(keyframes, expected) << i;
      }
    }
  }

  TranscodeOptions bad;
  bad.hw_encode = "qsv";
  auto status = TranscodeSegment(input, ladder, bad).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("hw_encode"));
}

TEST_F(TranscoderTest, ExactFrameCountsAt30And60FpsAndPassthrough) {
  struct Case {
    std::string fps;
    int frames;
    std::vector<std::pair<int, int>> rates;  // output rates, 0 = passthrough
    std::vector<int> expected;
  };
  const std::vector<Case> cases = {
      {"30", 60, {{0, 1}, {30, 1}, {60, 1}, {15, 1}, {24, 1}}, {60, 60, 120, 30, 48}},
      {"60", 120, {{0, 1}, {30, 1}, {60, 1}}, {120, 60, 120}},
      {"25", 50, {{0, 1}, {30, 1}, {60, 1}}, {50, 60, 120}},
  };
  for (const Case& c : cases) {
    for (const char* container : {"mpegts", "mp4"}) {
      const std::string input = Frames(c.frames, c.fps, container);
      std::vector<RenditionSpec> ladder;
      for (auto [num, den] : c.rates) {
        ladder.push_back(num == 0 ? Spec(160, 90) : Spec(160, 90, num, den));
      }
      TranscodeOptions options;
      options.container = container;
      const std::string what = c.fps + " fps " + container;
      TranscodeResult result = Checked(input, ladder, options, what);
      ASSERT_EQ(result.renditions.size(), ladder.size()) << what;
      EXPECT_EQ(result.input_frames, c.frames) << what;
      for (size_t i = 0; i < ladder.size(); ++i) {
        const RenditionOutput& out = result.renditions[i];
        EXPECT_EQ(out.frames, c.expected[i]) << what << " rendition " << i;
        const double rate = c.rates[i].first == 0 ? std::stod(c.fps) : c.rates[i].first;
        ExpectEvenlySpaced(Demux(out.data), rate, what + " rendition " + std::to_string(i));
      }
    }
  }
}

TEST_F(TranscoderTest, FractionalRatesInAndOut) {
  // 2 s (to the frame) at 29.97 and 23.976: converted to each other exactly, as both are n/1001.
  struct Case {
    std::string fps;
    int frames;
    double rate;
  };
  for (const Case& c :
       {Case{"30000/1001", 60, 30000.0 / 1001}, Case{"24000/1001", 48, 24000.0 / 1001}}) {
    const std::string input = Frames(c.frames, c.fps);
    TranscodeResult result = Checked(input,
                                     {Spec(160, 90), Spec(160, 90, 30000, 1001),
                                      Spec(160, 90, 24000, 1001), Spec(160, 90, 60000, 1001)},
                                     {}, c.fps);
    ASSERT_EQ(result.renditions.size(), 4u);
    EXPECT_EQ(result.input_frames, c.frames) << c.fps;
    EXPECT_NEAR(result.duration_seconds, c.frames / c.rate, 0.001) << c.fps;
    const double seconds = c.frames / c.rate;  // 2.002
    const std::vector<double> rates = {c.rate, 30000.0 / 1001, 24000.0 / 1001, 60000.0 / 1001};
    for (size_t i = 0; i < rates.size(); ++i) {
      const RenditionOutput& out = result.renditions[i];
      EXPECT_EQ(out.frames, std::lround(seconds * rates[i])) << c.fps << " rendition " << i;
      Demuxed d = Demux(out.data);
      ExpectEvenlySpaced(d, rates[i], c.fps + " rendition " + std::to_string(i));
    }
  }
}

TEST_F(TranscoderTest, TinySegments) {
  for (int n : {1, 2, 3, 5, 10}) {
    for (const char* in_container : {"mpegts", "mp4"}) {
      const std::string input = Frames(n, "30", in_container);
      for (const char* container : {"mpegts", "mp4"}) {
        TranscodeOptions options;
        options.container = container;
        const std::string what = std::to_string(n) + " frames " + in_container;
        TranscodeResult result = Checked(
            input, {Spec(160, 90), Spec(96, 54, 60, 1), Spec(80, 46, 15, 1)}, options, what);
        ASSERT_EQ(result.renditions.size(), 3u) << what;
        EXPECT_EQ(result.input_frames, n) << what;
        EXPECT_EQ(result.renditions[0].frames, n) << what;
        EXPECT_EQ(result.renditions[1].frames, 2 * n) << what;
        // Half the rate: n / 2, rounded either way by where the slots fall; at least one frame.
        EXPECT_GE(result.renditions[2].frames, std::max(1, n / 2)) << what;
        EXPECT_LE(result.renditions[2].frames, (n + 1) / 2) << what;
      }
    }
  }
}

TEST_F(TranscoderTest, OddAndPortraitSizesBecomeEvenKeepingAspect) {
  // 123x456 needs 4:4:4 for libx264 to accept an odd width; 90x160 is plain portrait 4:2:0.
  const std::string odd = MakeTestSegmentWithArgs(
      dir_, 123, 456, "30", 0.5, "-c:v libx264 -preset ultrafast -pix_fmt yuv444p -f mpegts", "ts",
      "testsrc");
  const std::string portrait = MakeTestSegmentWithArgs(
      dir_, 90, 160, "30", 0.5, "-c:v libx264 -preset ultrafast -pix_fmt yuv420p -f mp4", "mp4");
  struct Case {
    const std::string* input;
    int in_w, in_h;
    RenditionSpec spec;
    int w, h;
  };
  const std::vector<Case> cases = {
      {&odd, 123, 456, Spec(0, 0), 124, 456},    {&odd, 123, 456, Spec(0, 228), 62, 228},
      {&odd, 123, 456, Spec(0, 90), 24, 90},     {&odd, 123, 456, Spec(64, 0), 64, 238},
      {&portrait, 90, 160, Spec(0, 0), 90, 160}, {&portrait, 90, 160, Spec(0, 100), 56, 100},
      {&portrait, 90, 160, Spec(46, 0), 46, 82}, {&portrait, 90, 160, Spec(90, 90), 90, 90},
  };
  for (const char* container : {"mpegts", "mp4"}) {
    for (const Case& c : cases) {
      TranscodeOptions options;
      options.container = container;
      const std::string what = std::to_string(c.in_w) + "x" + std::to_string(c.in_h) + " -> " +
                               std::to_string(c.spec.width) + "x" + std::to_string(c.spec.height);
      TranscodeResult result = Checked(*c.input, {c.spec}, options, what);
      ASSERT_EQ(result.renditions.size(), 1u) << what;
      const RenditionOutput& out = result.renditions[0];
      EXPECT_EQ(out.width, c.w) << what;
      EXPECT_EQ(out.height, c.h) << what;
      EXPECT_EQ(out.width % 2, 0) << what;
      EXPECT_EQ(out.height % 2, 0) << what;
      EXPECT_EQ(out.frames, 15) << what;
      if (c.spec.width == 0 || c.spec.height == 0) {
        // Aspect kept to within the rounding to even sizes.
        EXPECT_NEAR(static_cast<double>(out.width) / out.height,
                    static_cast<double>(c.in_w) / c.in_h, 2.0 / out.height)
            << what;
      }
    }
  }
}

TEST_F(TranscoderTest, HevcInput) {
  if (avcodec_find_encoder_by_name("libx265") == nullptr ||
      avcodec_find_decoder(AV_CODEC_ID_HEVC) == nullptr) {
    GTEST_SKIP() << "libx265 or the HEVC decoder is not available";
  }
  for (const char* in_container : {"mpegts", "mp4"}) {
    SegmentSpec spec;
    spec.width = 160;
    spec.height = 90;
    spec.seconds = 1;
    spec.codec = "libx265";
    spec.container = in_container;
    spec.audio = true;
    const std::string input = MakeTestSegment(dir_, spec);
    for (const char* container : {"mpegts", "mp4"}) {
      TranscodeOptions options;
      options.container = container;
      const std::string what = std::string("hevc ") + in_container;
      TranscodeResult result = Checked(input, {Spec(160, 90), Spec(96, 54, 60, 1)}, options, what);
      ASSERT_EQ(result.renditions.size(), 2u) << what;
      EXPECT_EQ(result.input_frames, 30) << what;
      EXPECT_EQ(result.renditions[0].frames, 30) << what;
      EXPECT_EQ(result.renditions[1].frames, 60) << what;
      Demuxed d = Demux(result.renditions[0].data);
      EXPECT_EQ(d.audio_streams, 1) << what;
      EXPECT_GT(d.audio_packets, 40) << what;
    }
  }
  // And the decoded output is H.264 that ffprobe can read.
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 0.5;
  spec.codec = "libx265";
  TranscodeOk(MakeTestSegment(dir_, spec), {Spec(0, 0)});
}

TEST_F(TranscoderTest, GopPlacementAndIntraOnly) {
  const std::string input = Frames(60, "30", "mpegts");
  RenditionSpec half = Spec(160, 90);
  half.gop_seconds = 0.5;
  half.preset = "veryfast";  // B-frames: keyframes must still land on the GOP grid
  half.profile = "high";
  RenditionSpec half60 = half;
  half60.fps_num = 60;
  half60.fps_den = 1;
  RenditionSpec half24 = half;
  half24.fps_num = 24;
  half24.fps_den = 1;
  RenditionSpec intra = Spec(96, 54);
  intra.intra_only = true;
  intra.preset = "veryfast";
  RenditionSpec intra60 = intra;
  intra60.fps_num = 60;
  intra60.fps_den = 1;
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions options;
    options.container = container;
    TranscodeResult result = Checked(input, {half, half60, half24, intra, intra60}, options, "GOP");
    ASSERT_EQ(result.renditions.size(), 5u) << container;
    const std::vector<std::vector<int>> expected = {
        {0, 15, 30, 45}, {0, 30, 60, 90}, {0, 12, 24, 36}};
    for (size_t i = 0; i < 3; ++i) {
      Demuxed d = Demux(result.renditions[i].data);
      EXPECT_EQ(d.keyframes(), 4) << container << " rendition " << i;
      EXPECT_EQ(d.keyframe_positions(), expected[i]) << container << " rendition " << i;
    }
    for (size_t i = 3; i < 5; ++i) {
      const RenditionOutput& out = result.renditions[i];
      Demuxed d = Demux(out.data);
      EXPECT_EQ(out.frames, i == 3 ? 60 : 120) << container;
      EXPECT_EQ(d.keyframes(), out.frames) << container << " intra-only rendition " << i;
      EXPECT_TRUE(out.spec.intra_only);
    }
  }
  // The decoder agrees: every frame of the intra-only output is an I frame.
  TranscodeOptions options;
  TranscodeResult result = TranscodeOk(input, {intra}, options);
  ASSERT_EQ(result.renditions.size(), 1u);
  std::string error;
  auto frames = ProbeFrames(dir_, result.renditions[0].data, "ts", &error);
  ASSERT_EQ(frames.size(), 60u) << error;
  for (const auto& f : frames) {
    EXPECT_TRUE(f.key_frame);
    EXPECT_EQ(f.pict_type, "I");
  }
}

}  // namespace
}  // namespace switchyard::orchestrator

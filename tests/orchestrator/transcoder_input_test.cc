// TranscodeSegment on bad, cut and odd inputs, and the segment limits (transcoder.h).
#include "orchestrator/transcode/transcoder.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"
#include "orchestrator/transcoder_fixture.h"
#include "support/media_fixtures.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

namespace switchyard::orchestrator {
namespace {

using ::switchyard::testing::Demuxed;
using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::MakeTestSegmentWithArgs;
using ::switchyard::testing::SegmentSpec;
using ::testing::HasSubstr;
using transcoder_test::CheckOutput;
using transcoder_test::Spec;
using transcoder_test::TranscoderTest;

// Rewrites the PTS/DTS of the video PES headers of an MPEG-TS in place: `edit(n, pts, dts)` is
// called for the n-th video PES with its timestamps (-1 when absent); setting one to -1 removes it
// (the header bytes become stuffing). Only fields present in the input can be changed.
std::string EditTsTimestamps(std::string ts,
                             const std::function<void(int, int64_t*, int64_t*)>& edit) {
  auto read_ts = [](const unsigned char* p) {
    return (int64_t{(p[0] >> 1) & 7} << 30) | (int64_t{p[1]} << 22) | (int64_t{p[2] >> 1} << 15) |
           (int64_t{p[3]} << 7) | int64_t{p[4] >> 1};
  };
  auto write_ts = [](unsigned char* p, int prefix, int64_t v) {
    p[0] = static_cast<unsigned char>((prefix << 4) | (((v >> 30) & 7) << 1) | 1);
    p[1] = static_cast<unsigned char>((v >> 22) & 0xff);
    p[2] = static_cast<unsigned char>((((v >> 15) & 0x7f) << 1) | 1);
    p[3] = static_cast<unsigned char>((v >> 7) & 0xff);
    p[4] = static_cast<unsigned char>(((v & 0x7f) << 1) | 1);
  };
  int n = 0;
  for (size_t off = 0; off + 188 <= ts.size(); off += 188) {
    auto* b = reinterpret_cast<unsigned char*>(&ts[off]);
    if (b[0] != 0x47 || (b[1] & 0x40) == 0) continue;  // not a PES start
    size_t payload = 4;
    const int afc = (b[3] >> 4) & 3;
    if ((afc & 1) == 0) continue;
    if ((afc & 2) != 0) payload += 1 + b[4];
    if (payload + 19 > 188) continue;
    unsigned char* p = b + payload;
    if (p[0] != 0 || p[1] != 0 || p[2] != 1 || (p[3] & 0xF0) != 0xE0) continue;
    const int flags = p[7] >> 6;
    const int header_length = p[8];
    int64_t pts = (flags & 2) ? read_ts(p + 9) : -1;
    int64_t dts = flags == 3 ? read_ts(p + 14) : -1;
    const bool had_dts = dts >= 0;
    edit(n++, &pts, &dts);
    if (pts < 0) {
      p[7] &= 0x3F;
      std::fill(p + 9, p + 9 + header_length, 0xFF);
    } else if (had_dts && dts >= 0) {
      write_ts(p + 9, 3, pts);
      write_ts(p + 14, 1, dts);
    } else {
      p[7] = static_cast<unsigned char>((p[7] & 0x3F) | 0x80);
      write_ts(p + 9, 2, pts);
      if (had_dts) std::fill(p + 14, p + 19, 0xFF);
    }
  }
  return ts;
}

// Copies the packets of `input` into a new container of `format`, dropping those `keep` refuses
// (it sees each packet and whether it is video).
std::string Remux(const std::string& input, const std::string& format,
                  const std::function<bool(const AVPacket*, bool)>& keep) {
  auto demuxer = media::OpenMemoryDemuxer(input, "mpegts,mov,mp4");
  if (!demuxer.ok()) return "";
  AVFormatContext* in = (*demuxer)->format.get();
  std::string out_data;
  auto muxer = media::OpenMemoryMuxer(format, &out_data);
  if (!muxer.ok()) return "";
  AVFormatContext* out = (*muxer)->format.get();
  for (unsigned i = 0; i < in->nb_streams; ++i) {
    AVStream* st = avformat_new_stream(out, nullptr);
    avcodec_parameters_copy(st->codecpar, in->streams[i]->codecpar);
    st->codecpar->codec_tag = 0;
    st->time_base = in->streams[i]->time_base;
  }
  AVDictionary* opts = nullptr;  // our writer is not seekable: fragmented MP4
  if (format == "mp4") av_dict_set(&opts, "movflags", "empty_moov+default_base_moof", 0);
  const int ret = avformat_write_header(out, &opts);
  av_dict_free(&opts);
  if (ret < 0) return "";
  media::AvPacketPtr pkt(av_packet_alloc());
  while (av_read_frame(in, pkt.get()) >= 0) {
    const bool video = in->streams[pkt->stream_index]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO;
    if (keep(pkt.get(), video)) {
      av_packet_rescale_ts(pkt.get(), in->streams[pkt->stream_index]->time_base,
                           out->streams[pkt->stream_index]->time_base);
      pkt->pos = -1;
      if (av_write_frame(out, pkt.get()) < 0) return "";
    }
    av_packet_unref(pkt.get());
  }
  av_write_trailer(out);
  avio_flush(out->pb);
  muxer->reset();
  return out_data;
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
  const std::string audio_only = AudioOnlySegment(1);
  ASSERT_FALSE(audio_only.empty());
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

// Segment limits (transcode.max_segment_bytes / max_segment_seconds): size before anything is
// demuxed, then seconds of video (of audio, without video) measured from the packets alone,
// before any decode or encode.
TEST_F(TranscoderTest, SegmentSizeAndDurationLimitsComeBeforeAnyDecoding) {
  const std::string formats = "mpegts,mov,mp4";
  // 2 s at 30 fps: 60 frames, the last one ending at 2.000 s, in both containers.
  SegmentSpec mp4_spec;
  mp4_spec.container = "mp4";
  const std::string mp4 = MakeTestSegment(dir_, mp4_spec);
  for (const std::string* input : {&Segment(), &mp4}) {
    auto seconds = MeasureSegmentSeconds(*input, formats, 100000, 1e9);
    ASSERT_TRUE(seconds.has_value());
    EXPECT_NEAR(seconds->seconds, 2.0, 1e-6);
    EXPECT_TRUE(seconds->video);
    // Stops early once over: the span read so far is over the bound and short of the whole.
    auto early = MeasureSegmentSeconds(*input, formats, 100000, 0.5);
    ASSERT_TRUE(early.has_value());
    EXPECT_GT(early->seconds, 0.5);
    EXPECT_LT(early->seconds, 2.0);
  }
  EXPECT_FALSE(MeasureSegmentSeconds("not media at all", formats, 1000, 1e9).has_value());
  EXPECT_FALSE(MeasureSegmentSeconds("", formats, 1000, 1e9).has_value());

  // A segment without video (a stream's later segment may carry audio only) is measured on its
  // audio, and held to the same limit.
  const std::string audio_only = AudioOnlySegment(3);
  ASSERT_FALSE(audio_only.empty());
  auto audio_seconds = MeasureSegmentSeconds(audio_only, formats, 100000, 1e9);
  ASSERT_TRUE(audio_seconds.has_value());
  EXPECT_FALSE(audio_seconds->video);
  // Coarser than video: demuxed without a parser, MPEG-TS audio comes as PES packets of several
  // AAC frames each, whose last one's duration is estimated (the smallest gap between packets),
  // and the encoder adds priming frames. Within a PES packet or two of 3 s.
  EXPECT_GT(audio_seconds->seconds, 2.9);
  EXPECT_LT(audio_seconds->seconds, 3.4);
  auto audio_over = CheckSegmentLimits(audio_only, 64 << 20, 2.5, formats, 100000, "segment");
  EXPECT_EQ(audio_over.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(audio_over.message(), HasSubstr("s of audio, more than the limit of 2.5 s"));
  EXPECT_TRUE(CheckSegmentLimits(audio_only, 64 << 20, 3.5, formats, 100000, "segment").ok());

  // Exactly at the limits: transcoded.
  TranscodeOptions options;
  options.max_input_seconds = 2.0;
  options.max_input_bytes = static_cast<int64_t>(Segment().size());
  auto at_limit = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  ASSERT_TRUE(at_limit.ok()) << at_limit.status();
  EXPECT_EQ(at_limit->input_frames, 60);

  // Over the duration limit: refused naming the measured value and the limit.
  options.max_input_seconds = 1.9;
  auto too_long = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_long.status().message(), "segment: 2.000 s of video, more than the limit of 1.9 s");
  options.container = "mp4";
  auto mp4_too_long = TranscodeSegment(mp4, {Spec(64, 48)}, options);
  EXPECT_EQ(mp4_too_long.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mp4_too_long.status().message(), HasSubstr("2.000 s of video"));
  // Before decoding: the frame limit (counted as frames are decoded) is not what answers.
  options.max_input_frames = 10;
  too_long = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_THAT(too_long.status().message(), HasSubstr("more than the limit of 1.9 s"));

  // Over the size limit by one byte: refused on the size alone, before demuxing (garbage of that
  // size gets the same answer, not "not a media container").
  options = {};
  options.max_input_bytes = static_cast<int64_t>(Segment().size()) - 1;
  auto too_big = TranscodeSegment(Segment(), {Spec(64, 48)}, options);
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_big.status().message(),
            absl::StrCat("segment: ", Segment().size(), " bytes, more than the limit of ",
                         Segment().size() - 1));
  auto garbage = TranscodeSegment(std::string(Segment().size(), 'x'), {Spec(64, 48)}, options);
  EXPECT_THAT(garbage.status().message(), HasSubstr("bytes, more than the limit of"));

  // Garbage within the limits still gets the demuxer's own answer.
  auto not_media = TranscodeSegment(std::string(4000, 'x'), {Spec(64, 48)}, TranscodeOptions{});
  EXPECT_EQ(not_media.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(not_media.status().message(), HasSubstr("not a recognized media container"));

  // The defaults (64 MiB, 30 s) take the segment, and the next transcode runs as before.
  EXPECT_EQ(TranscodeOptions().max_input_bytes, 64 << 20);
  EXPECT_EQ(TranscodeOptions().max_input_seconds, 30);
  auto next = TranscodeSegment(Segment(), {Spec(64, 48)}, TranscodeOptions{});
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->input_frames, 60);
}

// A stream whose timestamps claim far more time than its frames cover is measured by its
// timestamps (what decoding would have to fill or follow) and refused before decoding.
TEST_F(TranscoderTest, SegmentDurationFollowsATimestampJump) {
  const std::string input = Segment();
  // Frame 30 onwards moved 60 s later: 60 frames now span 62 s of presentation time.
  std::vector<int64_t> pts_seen;
  EditTsTimestamps(input, [&](int, int64_t* pts, int64_t*) { pts_seen.push_back(*pts); });
  ASSERT_EQ(pts_seen.size(), 60u);
  const std::string jumped = EditTsTimestamps(input, [&](int n, int64_t* pts, int64_t* dts) {
    if (n >= 30 && *pts >= 0) *pts += 60 * 90000;
    if (n >= 30 && *dts >= 0) *dts += 60 * 90000;
  });
  auto jumped_seconds = MeasureSegmentSeconds(jumped, "mpegts", 100000, 1e9);
  ASSERT_TRUE(jumped_seconds.has_value());
  EXPECT_NEAR(jumped_seconds->seconds, 62.0, 0.05);
  auto refused = TranscodeSegment(jumped, {Spec(64, 48)}, TranscodeOptions{});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(), HasSubstr("s of video, more than the limit of 30 s"));
}

TEST_F(TranscoderTest, SegmentWithoutKeyframeFailsFast) {
  // One IDR at the start of a 2 s GOP; dropping it leaves a segment cut from the middle of a GOP.
  const std::string input = MakeTestSegmentWithArgs(
      dir_, 160, 90, "30", 2.0, "-c:v libx264 -preset ultrafast -g 300 -pix_fmt yuv420p -f mpegts",
      "ts");
  int video = 0;
  const std::string headless = Remux(input, "mpegts", [&](const AVPacket* pkt, bool is_video) {
    if (!is_video) return true;
    const bool drop = (pkt->flags & AV_PKT_FLAG_KEY) != 0;
    ++video;
    return !drop;
  });
  ASSERT_FALSE(headless.empty());
  ASSERT_EQ(video, 60);
  // The same as MP4, where the sequence header is in the sample description (so the frame size
  // is known without the IDR).
  const std::string input_mp4 = MakeTestSegmentWithArgs(
      dir_, 160, 90, "30", 2.0, "-c:v libx264 -preset ultrafast -g 300 -pix_fmt yuv420p -f mp4",
      "mp4");
  const std::string headless_mp4 = Remux(input_mp4, "mp4", [&](const AVPacket* pkt, bool is_video) {
    return !is_video || (pkt->flags & AV_PKT_FLAG_KEY) == 0;
  });
  ASSERT_FALSE(headless_mp4.empty());
  const auto start = std::chrono::steady_clock::now();
  for (const std::string* in : {&headless, &headless_mp4}) {
    for (const char* container : {"mpegts", "mp4"}) {
      TranscodeOptions options;
      options.container = container;
      auto result = TranscodeSegment(*in, {Spec(160, 90), Spec(80, 46, 60, 1)}, options);
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
      EXPECT_THAT(result.status().message(), HasSubstr("no keyframe"));
    }
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

TEST_F(TranscoderTest, SegmentCutMidGopStartsAtItsFirstKeyframe) {
  // Keyframes every 0.5 s; the first 10 frames (before the 15th-frame IDR... less 5) are dropped.
  const std::string input =
      MakeTestSegmentWithArgs(dir_, 160, 90, "30", 2.0,
                              "-c:v libx264 -preset ultrafast -pix_fmt yuv420p "
                              "-force_key_frames 'expr:gte(t,n_forced*0.5)' -f mpegts",
                              "ts");
  int video = 0;
  const std::string cut = Remux(
      input, "mpegts", [&](const AVPacket*, bool is_video) { return !is_video || video++ >= 10; });
  TranscodeResult result = Checked(cut, {Spec(160, 90), Spec(80, 46, 60, 1)}, {}, "mid-GOP");
  ASSERT_EQ(result.renditions.size(), 2u);
  EXPECT_EQ(result.input_frames, 45);  // the 5 frames before the IDR at frame 15 are skipped
  EXPECT_EQ(result.renditions[0].frames, 45);
  EXPECT_EQ(result.renditions[1].frames, 90);
}

TEST_F(TranscoderTest, SegmentEnteredAtANonIdrIFrame) {
  // Open-GOP x264 with its SEI removed: the I-frame after the first GOP is not an IDR and carries
  // no recovery point, so no demuxer flags it as a keyframe; its SPS/PPS are repeated. A segment
  // starting there (the leading IDR's GOP dropped) is decodable and must transcode.
  const std::string input = MakeTestSegmentWithArgs(
      dir_, 160, 90, "30", 2.0,
      "-c:v libx264 -preset veryfast "
      "-x264-params keyint=30:min-keyint=30:open-gop=1:scenecut=0:repeat-headers=1 "
      "-bsf:v filter_units=remove_types=6 -pix_fmt yuv420p -f mpegts",
      "ts");
  auto has_sps = [](const AVPacket* pkt) {
    for (int i = 0; i + 3 < pkt->size; ++i) {
      if (pkt->data[i] == 0 && pkt->data[i + 1] == 0 && pkt->data[i + 2] == 1 &&
          (pkt->data[i + 3] & 0x1F) == 7) {
        return true;
      }
    }
    return false;
  };
  int video = 0;
  int flagged = 0;
  bool entered = false;
  const std::string cut = Remux(input, "mpegts", [&](const AVPacket* pkt, bool is_video) {
    if (!is_video) return true;
    // Keep from the second packet carrying a sequence header: the open-GOP I-frame.
    if (video++ > 0 && has_sps(pkt)) entered = true;
    if (entered && (pkt->flags & AV_PKT_FLAG_KEY) != 0) ++flagged;
    return entered;
  });
  ASSERT_TRUE(entered);
  ASSERT_EQ(flagged, 0) << "the I-frame is flagged: this input does not test the fallback";
  for (const char* container : {"mpegts", "mp4"}) {
    TranscodeOptions options;
    options.container = container;
    TranscodeResult result =
        Checked(cut, {Spec(160, 90), Spec(80, 46, 60, 1)}, options, "non-IDR I entry");
    ASSERT_EQ(result.renditions.size(), 2u);
    // Display frames 30 to 59: the I-frame and what follows it (leading pictures that reference
    // the dropped GOP are not shown).
    EXPECT_EQ(result.input_frames, 30) << container;
    EXPECT_EQ(result.renditions[0].frames, 30) << container;
    EXPECT_EQ(result.renditions[1].frames, 60) << container;
  }
}

TEST_F(TranscoderTest, NonMonotonicAndMissingInputTimestamps) {
  // B-frames, so the video PES headers carry both PTS and DTS.
  const std::string input = MakeTestSegmentWithArgs(
      dir_, 160, 90, "30", 2.0, "-c:v libx264 -preset veryfast -bf 2 -pix_fmt yuv420p -f mpegts",
      "ts");
  struct Case {
    std::string name;
    std::function<void(int, int64_t*, int64_t*)> edit;
    // All must transcode every frame; with exact_counts the converted output's frame count is
    // exact too (when presentation times are scrambled, the gaps they leave are filled).
    bool exact_counts;
  };
  std::vector<int64_t> dts_seen;
  EditTsTimestamps(input, [&](int, int64_t*, int64_t* dts) { dts_seen.push_back(*dts); });
  ASSERT_EQ(dts_seen.size(), 60u);
  ASSERT_GE(dts_seen[5], 0);
  const std::vector<Case> cases = {
      {"two DTS swapped",
       [&](int n, int64_t*, int64_t* dts) {
         if (n == 10) *dts = dts_seen[11];
         if (n == 11) *dts = dts_seen[10];
       },
       true},
      {"DTS jumps back 15 frames",
       [&](int n, int64_t*, int64_t* dts) {
         if (n == 20) *dts = dts_seen[5];
       },
       true},
      {"every DTS decreasing",
       [&](int n, int64_t*, int64_t* dts) { *dts = dts_seen[0] + 90000 - n * 3000; }, true},
      {"PTS and DTS of every third frame missing",
       [&](int n, int64_t* pts, int64_t* dts) {
         if (n % 3 == 1) *pts = *dts = -1;
       },
       true},
      {"DTS missing everywhere", [&](int, int64_t*, int64_t* dts) { *dts = -1; }, true},
      {"no timestamps at all", [&](int, int64_t* pts, int64_t* dts) { *pts = *dts = -1; }, true},
      {"PTS going backwards",
       [&](int n, int64_t* pts, int64_t* dts) {
         *pts = dts_seen[0] + 90000 * 3 - n * 3000;
         *dts = -1;
       },
       false},
  };
  for (const Case& c : cases) {
    const std::string edited = EditTsTimestamps(input, c.edit);
    ASSERT_EQ(edited.size(), input.size());
    for (const char* container : {"mpegts", "mp4"}) {
      TranscodeOptions options;
      options.container = container;
      const std::string what = c.name + " -> " + container;
      const auto start = std::chrono::steady_clock::now();
      auto result = TranscodeSegment(edited, {Spec(160, 90), Spec(80, 46, 60, 1)}, options);
      EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                10.0)
          << what;
      ASSERT_TRUE(result.ok()) << what << ": " << result.status();
      std::printf("[ INFO     ] %s: %lld and %lld frames\n", what.c_str(),
                  static_cast<long long>(result->renditions[0].frames),
                  static_cast<long long>(result->renditions[1].frames));
      for (const RenditionOutput& out : result->renditions) {
        Demuxed d = CheckOutput(out, what);
        EXPECT_GT(out.frames, 0) << what;
      }
      EXPECT_EQ(result->input_frames, 60) << what;
      EXPECT_EQ(result->renditions[0].frames, 60) << what;
      if (c.exact_counts) {
        EXPECT_EQ(result->renditions[1].frames, 120) << what;
      } else {
        EXPECT_GE(result->renditions[1].frames, 120) << what;
        EXPECT_LE(result->renditions[1].frames, 240) << what;
      }
    }
  }
}

TEST_F(TranscoderTest, MoreTruncatedAndGarbageInputs) {
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 90;
  spec.seconds = 1;
  spec.audio = true;
  const std::string ts = MakeTestSegment(dir_, spec);
  spec.container = "mp4";
  const std::string mp4 = MakeTestSegment(dir_, spec);
  std::mt19937 rng(99);
  std::string noise(50'000, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng());
  struct Case {
    std::string name;
    std::string data;
  };
  std::vector<Case> cases = {
      {"ts tables only", ts.substr(0, 188 * 3)},
      {"ts header packets then noise", ts.substr(0, 188 * 3) + noise.substr(0, 188 * 100)},
      {"mp4 ftyp then noise", mp4.substr(0, 32) + noise},
      {"mp4 moov only", mp4.substr(0, mp4.find("mdat") - 4)},
      {"one zero byte", std::string(1, '\0')},
      {"188 zero bytes", std::string(188, '\0')},
      {"ts sync bytes only", std::string(188 * 50, '\x47')},
  };
  // Cut at many points: every cut MP4 and every TS cut inside a transport packet is refused.
  for (int i = 1; i < 10; ++i) {
    const size_t at = mp4.size() * i / 10;
    cases.push_back({"mp4 cut at " + std::to_string(i * 10) + "%", mp4.substr(0, at)});
    const size_t ts_at = (ts.size() * i / 10 / 188) * 188 + 1 + static_cast<size_t>(i) * 17;
    cases.push_back({"ts cut at " + std::to_string(i * 10) + "%", ts.substr(0, ts_at)});
  }
  // Video payloads zeroed (headers intact): nothing decodable.
  std::string zeroed = ts;
  for (size_t off = 0; off + 188 <= zeroed.size(); off += 188) {
    auto* b = reinterpret_cast<unsigned char*>(&zeroed[off]);
    const int pid = ((b[1] & 0x1f) << 8) | b[2];
    if (pid != 0x100 || (b[1] & 0x40) != 0) continue;  // ffmpeg's first stream PID; keep PES starts
    std::fill(b + 4, b + 188, 0);
  }
  cases.push_back({"ts video payloads zeroed", zeroed});
  for (const Case& c : cases) {
    const auto start = std::chrono::steady_clock::now();
    auto result = TranscodeSegment(c.data, {Spec(64, 36), Spec(32, 18, 60, 1)}, {});
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0)
        << c.name;
    if (c.name == "ts video payloads zeroed" && result.ok()) {
      // The PES start packets still carry the IDR's first bytes: output is tolerated, not garbage.
      for (const RenditionOutput& out : result->renditions) CheckOutput(out, c.name);
      continue;
    }
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument)
        << c.name << ": " << result.status();
    EXPECT_THAT(result.status().message(), HasSubstr("segment")) << c.name;
  }
}

TEST_F(TranscoderTest, MoreRenditionsThanTheLimitAreRejected) {
  TranscodeOptions options;
  options.max_renditions = 3;
  std::vector<RenditionSpec> ladder(4, Spec(64, 36));
  auto over = TranscodeSegment(Segment(), ladder, options);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(over.status().message(), HasSubstr("4 renditions, more than the limit of 3"));
  ladder.pop_back();
  TranscodeResult ok = Checked(Segment(), ladder, options, "3 renditions");
  EXPECT_EQ(ok.renditions.size(), 3u);
  options.max_renditions = 0;
  auto none = TranscodeSegment(Segment(), {Spec(64, 36)}, options);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::orchestrator

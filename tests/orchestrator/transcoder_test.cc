#include "orchestrator/transcode/transcoder.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/hardware.h"
#include "support/media_fixtures.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

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

// What an output holds, read back in-process with libavformat.
struct Demuxed {
  std::string error;  // empty when it demuxed cleanly with strictly increasing DTS in every stream
  int video_streams = 0;
  int audio_streams = 0;
  int width = 0;
  int height = 0;
  std::vector<double> video_dts;  // seconds, file order
  std::vector<double> video_pts;  // seconds, file order
  std::vector<bool> video_key;    // per video packet, file order
  int64_t audio_packets = 0;

  int keyframes() const {
    return static_cast<int>(std::count(video_key.begin(), video_key.end(), true));
  }
  // Display-order positions of the keyframes.
  std::vector<int> keyframe_positions() const {
    std::vector<double> sorted = video_pts;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> positions;
    for (size_t i = 0; i < video_pts.size(); ++i) {
      if (!video_key[i]) continue;
      positions.push_back(static_cast<int>(
          std::lower_bound(sorted.begin(), sorted.end(), video_pts[i]) - sorted.begin()));
    }
    std::sort(positions.begin(), positions.end());
    return positions;
  }
};

Demuxed Demux(const std::string& data) {
  Demuxed d;
  auto demuxer = media::OpenMemoryDemuxer(data, "mpegts,mov,mp4");
  if (!demuxer.ok()) {
    d.error = demuxer.status().ToString();
    return d;
  }
  AVFormatContext* fmt = (*demuxer)->format.get();
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    const AVCodecParameters* par = fmt->streams[i]->codecpar;
    if (par->codec_type == AVMEDIA_TYPE_VIDEO) {
      if (d.video_streams++ == 0) {
        d.width = par->width;
        d.height = par->height;
      }
    } else if (par->codec_type == AVMEDIA_TYPE_AUDIO) {
      ++d.audio_streams;
    }
  }
  std::vector<int64_t> last(fmt->nb_streams, AV_NOPTS_VALUE);
  media::AvPacketPtr pkt(av_packet_alloc());
  for (int n = 0; n < 1'000'000; ++n) {
    const int ret = av_read_frame(fmt, pkt.get());
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      d.error = "read failed: " + media::AvErrorString(ret);
      break;
    }
    const AVStream* st = fmt->streams[pkt->stream_index];
    int64_t& prev = last[pkt->stream_index];
    if (pkt->dts == AV_NOPTS_VALUE) {
      d.error = "stream " + std::to_string(pkt->stream_index) + " packet without a DTS";
    } else if (prev != AV_NOPTS_VALUE && pkt->dts <= prev) {
      d.error = "stream " + std::to_string(pkt->stream_index) + ": DTS " +
                std::to_string(pkt->dts) + " after " + std::to_string(prev);
    }
    if (pkt->dts != AV_NOPTS_VALUE) prev = pkt->dts;
    if (st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) {
      d.video_dts.push_back(pkt->dts * av_q2d(st->time_base));
      d.video_pts.push_back((pkt->pts == AV_NOPTS_VALUE ? pkt->dts : pkt->pts) *
                            av_q2d(st->time_base));
      d.video_key.push_back((pkt->flags & AV_PKT_FLAG_KEY) != 0);
    } else if (st->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      ++d.audio_packets;
    }
    av_packet_unref(pkt.get());
    if (!d.error.empty()) break;
  }
  return d;
}

// Every output must pass this: it demuxes, DTS increases in every stream, the video packet count
// is the reported frame count, and the first video packet is a keyframe.
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

class TranscoderTest : public ::testing::Test {
 protected:
  // The 2 s, 30 fps, 320x240 MPEG-TS segment most tests use.
  const std::string& Segment() {
    if (segment_.empty()) segment_ = MakeTestSegment(dir_, SegmentSpec{});
    return segment_;
  }

  // An MPEG-TS segment with only an AAC track (a sine) of `seconds`, and no video; empty (with a
  // test failure) if ffmpeg fails.
  std::string AudioOnlySegment(int seconds) {
    const auto path = dir_.path() / absl::StrCat("audio-only-", seconds, "s.ts");
    std::string log;
    const int rc = switchyard::testing::RunCommand(
        absl::StrCat("ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=duration=", seconds,
                     " -c:a aac -f mpegts ", path.string()),
        &log);
    EXPECT_EQ(rc, 0) << log;
    return rc == 0 ? switchyard::testing::ReadFile(path) : std::string();
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
      CheckOutput(out, options.container);
    }
    return *std::move(result);
  }

  // Transcoding must succeed; every output is checked in-process (CheckOutput).
  TranscodeResult Checked(const std::string& input, const std::vector<RenditionSpec>& ladder,
                          const TranscodeOptions& options = {}, const std::string& what = "") {
    auto result = TranscodeSegment(input, ladder, options);
    EXPECT_TRUE(result.ok()) << what << ": " << result.status();
    if (!result.ok()) return {};
    EXPECT_EQ(result->renditions.size(), ladder.size()) << what;
    for (const RenditionOutput& out : result->renditions) {
      CheckOutput(out, what + " -> " + options.container);
    }
    return *std::move(result);
  }

  // An H.264 segment of `frames` frames at `fps`, 160x90, in `container` ("mpegts" or "mp4").
  std::string Frames(int frames, const std::string& fps, const std::string& container = "mpegts",
                     const std::string& extra = "-preset ultrafast") {
    return MakeTestSegmentWithArgs(dir_, 160, 90, fps, 30.0,
                                   "-frames:v " + std::to_string(frames) + " -c:v libx264 " +
                                       extra + " -pix_fmt yuv420p -f " + container,
                                   Ext(container));
  }

  TempDir dir_;
  std::string segment_;
};

// Output timestamps are evenly spaced at `rate` frames per second.
void ExpectEvenlySpaced(const Demuxed& d, double rate, const std::string& what) {
  std::vector<double> pts = d.video_pts;
  std::sort(pts.begin(), pts.end());
  for (size_t i = 1; i < pts.size(); ++i) {
    ASSERT_NEAR(pts[i] - pts[i - 1], 1.0 / rate, 0.0005) << what << " frame " << i;
  }
}

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

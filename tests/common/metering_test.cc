#include "common/metering.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/media_fixtures.h"

namespace switchyard::metering {
namespace {

using ::switchyard::testing::MakeTestImage;
using ::switchyard::testing::MakeTestSegment;
using ::switchyard::testing::ProbeVideo;
using ::switchyard::testing::ReadFile;
using ::switchyard::testing::RunCommand;
using ::switchyard::testing::SegmentSpec;
using ::switchyard::testing::TempDir;
using ::testing::HasSubstr;

// A tone of `seconds` at `rate` Hz encoded by the ffmpeg CLI into `ext` (its codec's default).
std::string MakeTone(const TempDir& dir, double seconds, int rate, const std::string& ext) {
  const auto path = dir.path() / ("tone." + ext);
  std::string log;
  const std::string cmd =
      "ffmpeg -nostdin -loglevel error -y -f lavfi -i sine=frequency=440:"
      "sample_rate=" +
      std::to_string(rate) + ":duration=" + std::to_string(seconds) + " " + path.string();
  EXPECT_EQ(RunCommand(cmd, &log), 0) << log;
  return ReadFile(path);
}

void PutLe(std::string* s, uint32_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A 16-bit PCM WAV of `frames` silent frames, with an optional LIST chunk before "data".
std::string MakeWav(int rate, int channels, int frames, bool list_chunk) {
  std::string body = "WAVE";
  body += "fmt ";
  PutLe(&body, 16, 4);
  PutLe(&body, 1, 2);
  PutLe(&body, channels, 2);
  PutLe(&body, rate, 4);
  PutLe(&body, rate * channels * 2, 4);
  PutLe(&body, channels * 2, 2);
  PutLe(&body, 16, 2);
  if (list_chunk) {
    body += "LIST";
    PutLe(&body, 5, 4);
    body += "INFOx";
    body.push_back('\0');  // pad byte of the odd-sized chunk
  }
  body += "data";
  PutLe(&body, frames * channels * 2, 4);
  body.append(static_cast<size_t>(frames) * channels * 2, '\0');
  std::string wav = "RIFF";
  PutLe(&wav, static_cast<uint32_t>(body.size()), 4);
  return wav + body;
}

TEST(MeteringTest, UnitOfEveryPipeline) {
  for (const char* p :
       {"text-to-image", "image-to-image", "image-to-video", "upscale", "image-to-text",
        "segment-anything-2", "transcode", "live-video-to-video"}) {
    EXPECT_EQ(UnitOf(p), "pixel") << p;
  }
  EXPECT_EQ(UnitOf("audio-to-text"), "ms");
  EXPECT_EQ(UnitOf("text-to-speech"), "ms");
  EXPECT_EQ(UnitOf("llm"), "token");
  EXPECT_EQ(UnitOf("kserve"), "element");
  EXPECT_EQ(UnitOf("no-such-pipeline"), "");
}

TEST(MeteringTest, TextToImageCountsOutputPixelsFromTheImagesThemselves) {
  TempDir dir;
  v1::ImageResponse response;
  auto* a = response.add_images();
  a->set_data(MakeTestImage(dir, 64, 48, "png"));
  a->set_width(1);  // the reported sizes are not trusted: the headers are read
  a->set_height(1);
  response.add_images()->set_data(MakeTestImage(dir, 30, 20, "jpg"));
  auto units = Units(v1::TextToImageRequest(), response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 64 * 48 + 30 * 20);

  response.mutable_images(1)->set_data("not an image");
  units = Units(v1::TextToImageRequest(), response);
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(units.status().message(), HasSubstr("images[1]"));
}

TEST(MeteringTest, ImageToImageCountsOutputPixels) {
  TempDir dir;
  v1::ImageToImageRequest request;
  request.set_image(MakeTestImage(dir, 200, 100, "png"));  // the input does not count
  v1::ImageResponse response;
  response.add_images()->set_data(MakeTestImage(dir, 32, 16, "png"));
  auto units = Units(request, response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 32 * 16);
}

TEST(MeteringTest, InputPixelPipelinesCountTheRequestImage) {
  TempDir dir;
  const std::string png = MakeTestImage(dir, 40, 24, "png");
  const std::string jpg = MakeTestImage(dir, 50, 30, "jpg");
  v1::ImageResponse bigger;
  bigger.add_images()->set_data(MakeTestImage(dir, 160, 96, "png"));  // the output does not count

  v1::UpscaleRequest upscale;
  upscale.set_image(png);
  auto units = Units(upscale, bigger);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 40 * 24);

  v1::ImageToTextRequest i2t;
  i2t.set_image(jpg);
  units = Units(i2t, v1::ImageToTextResponse());
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 50 * 30);

  v1::SegmentAnything2Request sam;
  sam.set_image(png);
  units = Units(sam, v1::MasksResponse());
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 40 * 24);

  sam.set_image(png.substr(0, 10));
  units = Units(sam, v1::MasksResponse());
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(units.status().message(), HasSubstr("image"));
}

TEST(MeteringTest, ImageToVideoCountsFramesTimesSizeOfTheMp4) {
  TempDir dir;
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "10";
  spec.seconds = 1.5;
  spec.container = "mp4";
  const std::string mp4 = MakeTestSegment(dir, spec);
  auto probe = ProbeVideo(dir, mp4, "mp4");
  ASSERT_TRUE(probe.ok) << probe.error;
  ASSERT_EQ(probe.frames, 15);

  v1::VideoResponse response;
  response.add_images()->set_data(mp4);
  auto units = Units(v1::ImageToVideoRequest(), response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, int64_t{15} * 64 * 48);

  response.mutable_images(0)->set_data(mp4.substr(0, 200));
  EXPECT_FALSE(Units(v1::ImageToVideoRequest(), response).ok());
}

TEST(MeteringTest, AudioToTextCountsTheDecodedDurationOfTheRequest) {
  TempDir dir;
  v1::AudioToTextRequest request;
  request.set_audio(MakeTone(dir, 1.5, 16000, "wav"));
  auto units = Units(request, v1::TextResponse());
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 1500);

  request.set_audio(MakeTone(dir, 0.75, 44100, "flac"));
  units = Units(request, v1::TextResponse());
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 750);

  request.set_audio("definitely not audio");
  units = Units(request, v1::TextResponse());
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MeteringTest, ReadWavFormatReadsFormatAndLength) {
  // 16 kHz mono 16-bit: 32000 bytes of data are one second.
  std::string wav("RIFF\x24\x7d\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00", 24);
  wav.append("\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00", 12);
  wav.append("data\x00\x7d\x00\x00", 8);
  wav.append(32000, '\0');
  auto format = ReadWavFormat(wav);
  ASSERT_TRUE(format.ok()) << format.status();
  EXPECT_EQ(format->channels, 1);
  EXPECT_EQ(format->sample_rate, 16000);
  EXPECT_EQ(format->frames, 16000);
  EXPECT_DOUBLE_EQ(format->seconds(), 1.0);
  EXPECT_EQ(*WavMilliseconds(wav), 1000);
  EXPECT_FALSE(ReadWavFormat("RIFF....WAVE").ok());
  EXPECT_FALSE(ReadWavFormat("not a wav").ok());
}

TEST(MeteringTest, TextToSpeechCountsTheReturnedWav) {
  v1::AudioResponse response;
  response.mutable_audio()->set_data(MakeWav(24000, 1, 12000, false));
  auto units = Units(v1::TextToSpeechRequest(), response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 500);

  // Stereo, with another chunk before the data: 22050 frames at 44100 Hz.
  response.mutable_audio()->set_data(MakeWav(44100, 2, 22050, true));
  units = Units(v1::TextToSpeechRequest(), response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 500);

  response.mutable_audio()->set_data("RIFF....WAVEjunk");
  units = Units(v1::TextToSpeechRequest(), response);
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(units.status().message(), HasSubstr("audio"));
}

TEST(MeteringTest, LlmCountsPromptAndCompletionTokensAndChecksTheUsage) {
  v1::LLMTokenUsage usage;
  usage.set_prompt_tokens(12);
  usage.set_completion_tokens(5);
  usage.set_total_tokens(17);
  auto units = LlmUnits(usage, 256, 5);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 17);

  // More completion tokens than the request allowed.
  EXPECT_THAT(LlmUnits(usage, 4, 0).status().message(), HasSubstr("max_tokens"));
  // Fewer tokens than the messages that carried text.
  EXPECT_THAT(LlmUnits(usage, 256, 6).status().message(), HasSubstr("messages"));
  // A total that is not the sum.
  usage.set_total_tokens(30);
  EXPECT_THAT(LlmUnits(usage, 256, 0).status().message(), HasSubstr("total_tokens"));
  usage.set_total_tokens(-1 + 12);
  usage.set_completion_tokens(-1);
  EXPECT_FALSE(LlmUnits(usage, 256, 0).ok());
}

TEST(MeteringTest, TranscodeSumsFramesTimesSizeOverRenditions) {
  TempDir dir;
  SegmentSpec a;
  a.width = 64;
  a.height = 48;
  a.fps = "25";
  a.seconds = 1.0;
  SegmentSpec b = a;
  b.width = 32;
  b.height = 24;
  b.container = "mp4";
  v1::TranscodeResponse response;
  auto* r0 = response.add_renditions();
  r0->set_data(MakeTestSegment(dir, a));
  auto* r1 = response.add_renditions();
  r1->set_data(MakeTestSegment(dir, b));
  auto units = Units(v1::TranscodeRequest(), response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, int64_t{25} * 64 * 48 + int64_t{25} * 32 * 24);

  auto count = CountVideo(r0->data());
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(count->frames, 25);
  EXPECT_EQ(count->width, 64);
  EXPECT_EQ(count->height, 48);

  r1->set_data("garbage");
  units = Units(v1::TranscodeRequest(), response);
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(units.status().message(), HasSubstr("renditions[1]"));
}

TEST(MeteringTest, LiveVideoSegmentCountsFramesTimesSizeOfTheReturnedSegment) {
  TempDir dir;
  SegmentSpec spec;
  spec.width = 64;
  spec.height = 48;
  spec.fps = "10";
  spec.seconds = 1.0;
  v1::LiveVideoSegmentRequest request;
  request.set_segment(MakeTestSegment(dir, spec));
  spec.width = 32;
  spec.height = 24;
  spec.fps = "5";
  spec.seconds = 2.0;
  v1::LiveVideoSegmentResponse response;
  response.set_segment(MakeTestSegment(dir, spec));
  // The response's own fields are not trusted: the count comes from the returned segment's bytes.
  response.set_frames(1000);
  response.set_width(1920);
  response.set_height(1080);
  auto units = Units(request, response);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, int64_t{10} * 32 * 24);

  response.set_segment("not a segment");
  units = Units(request, response);
  EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(units.status().message(), HasSubstr("segment"));
  response.clear_segment();
  EXPECT_EQ(Units(request, response).status().code(), absl::StatusCode::kInvalidArgument);
}

inference::ModelInferRequest::InferInputTensor* AddInput(inference::ModelInferRequest* request,
                                                         const std::string& name,
                                                         const std::string& datatype,
                                                         std::vector<int64_t> shape) {
  auto* in = request->add_inputs();
  in->set_name(name);
  in->set_datatype(datatype);
  for (int64_t d : shape) in->add_shape(d);
  return in;
}

TEST(MeteringTest, ModelInferCountsTheElementsOfEveryInputTensor) {
  // Typed contents.
  inference::ModelInferRequest request;
  auto* x = AddInput(&request, "x", "FP32", {2, 3});
  for (int i = 0; i < 6; ++i) x->mutable_contents()->add_fp32_contents(i);
  auto* y = AddInput(&request, "y", "INT64", {4});
  for (int i = 0; i < 4; ++i) y->mutable_contents()->add_int64_contents(i);
  auto* empty = AddInput(&request, "empty", "FP32", {0, 5});  // no elements, no contents
  (void)empty;
  auto units = Units(request, inference::ModelInferResponse());
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 10);
  EXPECT_EQ(*InferElements(request), 10);

  // Raw contents: shape x the datatype's size, BYTES as length-prefixed strings.
  inference::ModelInferRequest raw;
  AddInput(&raw, "a", "FP16", {3, 2});
  raw.add_raw_input_contents(std::string(12, '\0'));
  AddInput(&raw, "b", "UINT8", {5});
  raw.add_raw_input_contents(std::string(5, '\x01'));
  AddInput(&raw, "s", "BYTES", {2});
  raw.add_raw_input_contents(std::string("\x02\0\0\0hi\0\0\0\0", 10));  // "hi" and ""
  AddInput(&raw, "scalar", "FP64", {});                                 // a scalar: one element
  raw.add_raw_input_contents(std::string(8, '\0'));
  units = InferElements(raw);
  ASSERT_TRUE(units.ok()) << units.status();
  EXPECT_EQ(*units, 6 + 5 + 2 + 1);
}

TEST(MeteringTest, ModelInferRefusesContentsThatDoNotMatchTheShapes) {
  auto expect_invalid = [](const inference::ModelInferRequest& request, const std::string& what) {
    auto units = InferElements(request);
    EXPECT_EQ(units.status().code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(units.status().message(), HasSubstr(what));
  };
  expect_invalid(inference::ModelInferRequest(), "no inputs");
  {
    inference::ModelInferRequest r;
    auto* in = AddInput(&r, "x", "FP32", {2, 3});
    for (int i = 0; i < 5; ++i) in->mutable_contents()->add_fp32_contents(i);
    expect_invalid(r, "input 'x': shape has 6 elements but the contents hold 5 values");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "FP32", {2, -1});
    expect_invalid(r, "input 'x': negative dimension -1");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "COMPLEX", {1})->mutable_contents()->add_fp32_contents(1);
    expect_invalid(r, "unknown datatype 'COMPLEX'");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "FP32", {1 << 20, 1 << 20, 1 << 20});
    expect_invalid(r, "input 'x': more than");
  }
  {
    inference::ModelInferRequest r;
    auto* in = AddInput(&r, "x", "FP32", {2});
    in->mutable_contents()->add_fp32_contents(1);
    in->mutable_contents()->add_int_contents(1);
    expect_invalid(r, "more than one contents field");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "INT32", {3});
    r.add_raw_input_contents(std::string(11, '\0'));
    expect_invalid(r, "input 'x': shape has 3 elements of INT32 (12 bytes)");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "FP32", {1});
    AddInput(&r, "y", "FP32", {1});
    r.add_raw_input_contents(std::string(4, '\0'));
    expect_invalid(r, "raw_input_contents has 1 entries for 2 inputs");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "s", "BYTES", {1});
    r.add_raw_input_contents(std::string("\x09\0\0\0abc", 7));  // length past the end
    expect_invalid(r, "not 4-byte-length-prefixed strings");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "s", "BYTES", {3});
    r.add_raw_input_contents(std::string("\x01\0\0\0a", 5));
    expect_invalid(r, "shape has 3 elements but the raw contents hold 1 strings");
  }
  {
    inference::ModelInferRequest r;
    AddInput(&r, "x", "FP32", {1})->mutable_contents()->add_fp32_contents(1);
    r.add_raw_input_contents(std::string(4, '\0'));
    expect_invalid(r, "both contents and raw_input_contents");
  }
}

TEST(MeteringTest, ModelInferReportRoundTripsThroughTheResponseParameters) {
  inference::ModelInferResponse response;
  auto report = InferReportOf(response);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("switchyard_units"));
  SetInferReport(42, 0.5, &response);
  EXPECT_EQ(response.parameters().at("switchyard_units").int64_param(), 42);
  EXPECT_EQ(response.parameters().at("switchyard_price_per_unit").double_param(), 0.5);
  report = InferReportOf(response);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->units, 42);
  EXPECT_EQ(report->price_per_unit, 0.5);
  // A parameter of the wrong type is not a report.
  (*response.mutable_parameters())["switchyard_price_per_unit"].set_string_param("0.5");
  report = InferReportOf(response);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(report.status().message(), HasSubstr("switchyard_price_per_unit"));
}

}  // namespace
}  // namespace switchyard::metering

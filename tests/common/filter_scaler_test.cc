#include "common/media/filter_scaler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

extern "C" {
#include <libavutil/frame.h>
#include <libavutil/hwcontext.h>
#include <libswscale/swscale.h>
}

#include "common/media/ffmpeg_util.h"
#include "common/media/hardware.h"

namespace switchyard::media {
namespace {

using ::testing::HasSubstr;

// A limited-range yuv420p picture with gradients and a moving square, so scaling has detail.
AvFramePtr MakeFrame(int width, int height, int64_t pts) {
  AvFramePtr f(av_frame_alloc());
  f->format = AV_PIX_FMT_YUV420P;
  f->width = width;
  f->height = height;
  EXPECT_EQ(av_frame_get_buffer(f.get(), 0), 0);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const bool square = x > width / 4 && x < width / 2 && y > height / 3 && y < height / 2;
      f->data[0][y * f->linesize[0] + x] = static_cast<uint8_t>(square ? 235 : 16 + (x + y) % 200);
    }
  }
  for (int p = 1; p < 3; ++p) {
    for (int y = 0; y < height / 2; ++y) {
      for (int x = 0; x < width / 2; ++x) {
        f->data[p][y * f->linesize[p] + x] = static_cast<uint8_t>(p == 1 ? 64 + x % 128 : 200 - y % 100);
      }
    }
  }
  f->pts = pts;
  f->color_range = AVCOL_RANGE_MPEG;
  return f;
}

// Mean absolute difference of the luma planes of two same-size frames.
double LumaDifference(const AVFrame* a, const AVFrame* b) {
  double sum = 0;
  for (int y = 0; y < a->height; ++y) {
    for (int x = 0; x < a->width; ++x) {
      sum += std::abs(a->data[0][y * a->linesize[0] + x] - b->data[0][y * b->linesize[0] + x]);
    }
  }
  return sum / (a->width * a->height);
}

AvFramePtr SwsScale(const AVFrame* src, int width, int height) {
  SwsContextPtr sws(sws_getContext(src->width, src->height, AV_PIX_FMT_YUV420P, width, height,
                                   AV_PIX_FMT_YUV420P, SWS_BICUBIC, nullptr, nullptr, nullptr));
  AvFramePtr out(av_frame_alloc());
  out->format = AV_PIX_FMT_YUV420P;
  out->width = width;
  out->height = height;
  EXPECT_EQ(av_frame_get_buffer(out.get(), 0), 0);
  sws_scale(sws.get(), src->data, src->linesize, 0, src->height, out->data, out->linesize);
  return out;
}

TEST(FilterScalerTest, ScalesSoftwareFramesLikeSwscale) {
  InitFfmpeg();
  auto scaler = FilterScaler::Create({.width = 320, .height = 240, .format = AV_PIX_FMT_YUV420P,
                                      .hw_frames_ctx = nullptr},
                                     160, 120);
  ASSERT_TRUE(scaler.ok()) << scaler.status();
  EXPECT_THAT((*scaler)->description(), HasSubstr("scale=w=160:h=120"));
  for (int64_t pts : {0, 3000, 6000}) {  // the graph is reused frame after frame
    AvFramePtr in = MakeFrame(320, 240, pts);
    auto out = (*scaler)->Scale(in.get());
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ((*out)->width, 160);
    EXPECT_EQ((*out)->height, 120);
    EXPECT_EQ((*out)->format, AV_PIX_FMT_YUV420P);
    EXPECT_EQ((*out)->pts, pts);
    EXPECT_EQ((*out)->color_range, AVCOL_RANGE_MPEG);
    AvFramePtr expected = SwsScale(in.get(), 160, 120);
    EXPECT_LT(LumaDifference(out->get(), expected.get()), 1.0);
    // The caller's frame is untouched and still referenced by the caller.
    EXPECT_EQ(in->width, 320);
    EXPECT_NE(in->buf[0], nullptr);
  }
}

TEST(FilterScalerTest, RefusesFramesItWasNotMadeFor) {
  InitFfmpeg();
  auto scaler = FilterScaler::Create({.width = 320, .height = 240, .format = AV_PIX_FMT_YUV420P,
                                      .hw_frames_ctx = nullptr},
                                     160, 120);
  ASSERT_TRUE(scaler.ok()) << scaler.status();
  AvFramePtr other = MakeFrame(256, 144, 0);
  EXPECT_FALSE((*scaler)->Accepts(other.get()));
  auto out = (*scaler)->Scale(other.get());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("made for 320x240"));
}

TEST(FilterScalerTest, BadArgumentsAreInvalid) {
  InitFfmpeg();
  const FilterScalerInput input{
      .width = 320, .height = 240, .format = AV_PIX_FMT_YUV420P, .hw_frames_ctx = nullptr};
  EXPECT_EQ(FilterScaler::Create(input, 161, 120).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FilterScaler::Create(input, 0, 120).status().code(),
            absl::StatusCode::kInvalidArgument);
  const FilterScalerInput gpu_without_pool{
      .width = 320, .height = 240, .format = AV_PIX_FMT_CUDA, .hw_frames_ctx = nullptr};
  auto status = FilterScaler::Create(gpu_without_pool, 160, 120).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("frames context"));
}

// On a machine with a CUDA device: a frame uploaded to the GPU and scaled there comes back close to
// the CPU's result. Skipped (and reported as such) elsewhere.
TEST(FilterScalerTest, ScalesGpuFramesOnTheGpu) {
  InitFfmpeg();
  AVBufferRef* device = SharedCudaDevice();
  if (device == nullptr) GTEST_SKIP() << "no CUDA device on this machine";
  AVBufferRef* pool = av_hwframe_ctx_alloc(device);
  ASSERT_NE(pool, nullptr);
  auto* frames = reinterpret_cast<AVHWFramesContext*>(pool->data);
  frames->format = AV_PIX_FMT_CUDA;
  frames->sw_format = AV_PIX_FMT_YUV420P;
  frames->width = 320;
  frames->height = 240;
  ASSERT_EQ(av_hwframe_ctx_init(pool), 0);
  AvFramePtr in = MakeFrame(320, 240, 42);
  AvFramePtr gpu(av_frame_alloc());
  ASSERT_EQ(av_hwframe_get_buffer(pool, gpu.get(), 0), 0);
  ASSERT_EQ(av_hwframe_transfer_data(gpu.get(), in.get(), 0), 0);
  gpu->pts = 42;
  auto scaler = FilterScaler::Create(
      {.width = 320, .height = 240, .format = AV_PIX_FMT_CUDA, .hw_frames_ctx = pool}, 160, 120);
  av_buffer_unref(&pool);  // the scaler holds its own reference
  ASSERT_TRUE(scaler.ok()) << scaler.status();
  auto out = (*scaler)->Scale(gpu.get());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ((*out)->format, AV_PIX_FMT_YUV420P);
  EXPECT_EQ((*out)->width, 160);
  EXPECT_EQ((*out)->pts, 42);
  AvFramePtr expected = SwsScale(in.get(), 160, 120);
  EXPECT_LT(LumaDifference(out->get(), expected.get()), 4.0);
}

}  // namespace
}  // namespace switchyard::media

#include "common/media/hardware.h"

#include <dlfcn.h>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavutil/buffer.h>
#include <libavutil/hwcontext.h>
}

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"

namespace switchyard::media {
namespace {

void Note(std::string* detail, const std::string& what) {
  absl::StrAppend(detail, detail->empty() ? "" : "; ", what);
}

VideoHardware Probe() {
  InitFfmpeg();
  VideoHardware hw;
  // The process's one CUDA context (also what decoders use); none without an NVIDIA driver.
  if (SharedCudaDevice() == nullptr) {
    Note(&hw.detail, "no CUDA device (no NVIDIA driver, or FFmpeg cannot open a device)");
    return hw;
  }
  hw.cuda = true;
  hw.nvdec_h264 = avcodec_find_decoder_by_name("h264_cuvid") != nullptr;
  hw.nvdec_hevc = avcodec_find_decoder_by_name("hevc_cuvid") != nullptr;
  if (!hw.nvdec_h264) Note(&hw.detail, "FFmpeg has no h264_cuvid decoder");
  if (!hw.nvdec_hevc) Note(&hw.detail, "FFmpeg has no hevc_cuvid decoder");

  const AVCodec* nvenc = avcodec_find_encoder_by_name("h264_nvenc");
  if (nvenc == nullptr) {
    Note(&hw.detail, "FFmpeg has no h264_nvenc encoder");
    return hw;
  }
  // The encoder is compiled in whenever FFmpeg was built with nv-codec-headers; whether the GPU
  // has NVENC shows only when a session opens.
  AvCodecContextPtr enc(avcodec_alloc_context3(nvenc));
  if (!enc) return hw;
  enc->width = 256;
  enc->height = 144;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, 30};
  enc->framerate = AVRational{30, 1};
  enc->bit_rate = 500000;
  const int ret = avcodec_open2(enc.get(), nvenc, nullptr);
  if (ret < 0) {
    Note(&hw.detail, absl::StrCat("h264_nvenc does not open: ", AvErrorString(ret)));
  } else {
    hw.nvenc_h264 = true;
  }
  return hw;
}

}  // namespace

std::vector<std::string> VideoHardware::Names() const {
  std::vector<std::string> names;
  if (cuda) names.push_back("cuda");
  if (nvdec_h264) names.push_back("nvdec-h264");
  if (nvdec_hevc) names.push_back("nvdec-hevc");
  if (nvenc_h264) names.push_back("nvenc-h264");
  return names;
}

const VideoHardware& ProbeVideoHardware() {
  static const VideoHardware* hw = new VideoHardware(Probe());
  return *hw;
}

AVBufferRef* SharedCudaDevice() {
  // Deliberately never freed: decoders hold references until the process exits.
  static AVBufferRef* const device = [] {
    // No NVIDIA driver, no device: asked without one, FFmpeg logs errors on every process start.
    void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
    if (driver == nullptr) return static_cast<AVBufferRef*>(nullptr);
    dlclose(driver);
    InitFfmpeg();
    AVBufferRef* raw = nullptr;
    if (av_hwdevice_ctx_create(&raw, AV_HWDEVICE_TYPE_CUDA, nullptr, nullptr, 0) < 0) {
      return static_cast<AVBufferRef*>(nullptr);
    }
    return raw;
  }();
  return device;
}

}  // namespace switchyard::media

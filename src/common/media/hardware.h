// What video hardware this machine has, found by trying it: a CUDA device FFmpeg can open,
// NVDEC decoders on it, and an NVENC H.264 encoder that actually opens (H100/H200 have NVDEC but
// no NVENC: the encoder exists in FFmpeg but fails to open there).
#pragma once

#include <string>
#include <vector>

struct AVBufferRef;

namespace switchyard::media {

struct VideoHardware {
  bool cuda = false;        // av_hwdevice_ctx_create(CUDA) succeeded
  bool nvdec_h264 = false;  // h264_cuvid decoder present and a CUDA device is there
  bool nvdec_hevc = false;  // hevc_cuvid likewise
  bool nvenc_h264 = false;  // h264_nvenc opened a small encode session
  std::string detail;       // why each is missing, for the startup log

  // Names advertised to gateways: "cuda", "nvdec-h264", "nvdec-hevc", "nvenc-h264".
  std::vector<std::string> Names() const;
};

// Probes once per process (the result is cached; later calls are free). Never fails: anything
// that does not work is reported absent, with the reason in `detail`. Takes well under a second
// on a machine without a GPU.
const VideoHardware& ProbeVideoHardware();

// The process's CUDA device for FFmpeg hardware decoding, opened on the first call and kept for the
// life of the process (opening one costs a CUDA context); null when there is none. Thread-safe.
// A decoder takes its own reference with av_buffer_ref.
AVBufferRef* SharedCudaDevice();

}  // namespace switchyard::media

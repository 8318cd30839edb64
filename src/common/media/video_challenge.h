// Known-answer video challenges (docs/security.md, "Hardware claims"): how the gateway checks a
// node's NVDEC and NVENC claims ("nvdec-h264", "nvdec-hevc", "nvenc-h264").
//
// Every clip derives from the challenge's fresh random seed: frame `index` of a seed is a
// deterministic 8-bit 4:2:0 picture (FillVideoChallengeFrame), so a node cannot precompute an
// answer.
//  - Decode (NVDEC): the gateway encodes the seed's frames with libx264 / libx265 and sends the
//    Annex B stream; the node decodes it with its claimed decoder and answers with a SHA-256 of
//    each decoded frame's pixels (VideoChallengeFrameDigest: planar Y, U, V rows, no padding).
//    H.264 and HEVC decoding of 8-bit streams is bit-exact in every conforming decoder, so the
//    gateway recomputes the digests with its software decoder and compares every one.
//  - Encode (NVENC): the node makes the seed's frames itself, encodes them with its claimed
//    encoder and answers with the H.264 Annex B bitstream; the gateway decodes it (single-threaded,
//    bounded: bytes, frames, pixels) and compares it with the frames it makes from the seed: the
//    same number of frames, of the requested size, at a PSNR of at least
//    kVideoChallengeMinPsnrDb.
// Neither proves the work ran on NVDEC/NVENC rather than in software: a CPU decodes or encodes
// a clip this small in a few milliseconds. What is proven is that the node has a working decoder
// or encoder of the claimed codec and used it on this seed; the gateway's time window catches
// only a node that is grossly slower than the hardware (docs/security.md says what it cannot).
//
// Everything read from the other side is bounded: a node validates requests
// (ValidateVideoChallenge), the gateway judges answers with the limits below.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "switchyard/node/v1/node.pb.h"

extern "C" {
#include <libavcodec/avcodec.h>
}

namespace switchyard::media {

inline constexpr int kVideoChallengeMinSeedBytes = 16;
inline constexpr int kVideoChallengeMaxSeedBytes = 64;
inline constexpr int kVideoChallengeMinSide = 64;
inline constexpr int kVideoChallengeMaxWidth = 640;
inline constexpr int kVideoChallengeMaxHeight = 360;
inline constexpr int kVideoChallengeMaxFrames = 120;
// A clip sent to be decoded (the gateway's own come to some tens of KiB).
inline constexpr int64_t kVideoChallengeMaxClipBytes = int64_t{2} << 20;
// An encoded answer (a sane one of the largest challenge is a few hundred KiB; raw 4:2:0 frames
// of it would be 40 MiB).
inline constexpr int64_t kVideoChallengeMaxAnswerBytes = int64_t{1} << 20;
// The encoded answer's PSNR against the seed's frames. The node's encoder runs at
// kVideoChallengeBitrate (about 1.6 bits per pixel at 320x192 and 30 fps): libx264 and NVENC
// both land well above 40 dB on this content; 30 dB leaves room for any encoder and preset while
// a bitstream of other frames (another seed, grey) stays far below (about 10 dB).
inline constexpr double kVideoChallengeMinPsnrDb = 30;
inline constexpr int64_t kVideoChallengeBitrate = 3000000;

// The workload the gateway sends (tests may shrink it).
struct VideoChallengeShape {
  int width = 320;
  int height = 192;
  int frames = 24;
};

// INVALID_ARGUMENT, naming the field, unless `request` is within the limits above: seed 16..64
// bytes; clips at most kVideoChallengeMaxClipBytes; encode_frames 0 (no encode) or 1..120 with
// encode_width 64..640 and encode_height 64..360, both even; something to do.
absl::Status ValidateVideoChallenge(const node::v1::VideoChallengeRequest& request);

// Frame `index` of `seed`: fills `frame`, which must be allocated as AV_PIX_FMT_YUV420P with its
// width and height set (even, within the limits).
void FillVideoChallengeFrame(std::string_view seed, int index, AVFrame* frame);

// SHA-256 of an 8-bit 4:2:0 frame's pixels: every row of Y (width bytes), then U, then V (width/2
// bytes each, height/2 rows; sizes rounded up). AV_PIX_FMT_YUV420P and AV_PIX_FMT_NV12 (NVDEC's
// output, its chroma deinterleaved) give the same digest for the same picture; INVALID_ARGUMENT
// for other formats.
absl::StatusOr<std::string> VideoChallengeFrameDigest(const AVFrame& frame);

// Encodes `frames` frames of `seed` at width x height with `encoder` ("libx264", "libx265",
// "h264_nvenc") into an Annex B elementary stream (parameter sets in band). `threads`: the
// encoder's thread count (0: it decides). libx264/libx265 run at their fastest preset.
absl::StatusOr<std::string> EncodeVideoChallengeClip(std::string_view seed, const char* encoder,
                                                     int width, int height, int frames,
                                                     int threads);

struct VideoChallengeDecodeLimits {
  int max_width = kVideoChallengeMaxWidth;
  int max_height = kVideoChallengeMaxHeight;
  int max_frames = kVideoChallengeMaxFrames;
};

// Decodes an Annex B elementary stream of `codec` (AV_CODEC_ID_H264 or AV_CODEC_ID_HEVC) and
// hands each frame, in system memory, to `sink`. `cuda`: decode with NVDEC (the native decoder
// with the CUDA hwaccel on media::SharedCudaDevice(), as the transcoder does) and fail
// (FAILED_PRECONDITION) when there is no CUDA device or a frame was not decoded on it; else the
// software decoder, single-threaded. INVALID_ARGUMENT for a corrupt stream, a frame over the
// limits, more than max_frames frames or none.
absl::Status DecodeVideoChallengeStream(std::string_view stream, AVCodecID codec, bool cuda,
                                        const VideoChallengeDecodeLimits& limits,
                                        const std::function<absl::Status(const AVFrame&)>& sink);

// The digests of every frame of `stream` (DecodeVideoChallengeStream, then
// VideoChallengeFrameDigest).
absl::StatusOr<std::vector<std::string>> VideoChallengeDigests(
    std::string_view stream, AVCodecID codec, bool cuda, const VideoChallengeDecodeLimits& limits);

// What the gateway found in a node's encoded answer.
struct EncodedAnswerCheck {
  bool ok = false;
  int frames = 0;       // decoded
  double psnr_db = 0;   // over the frames compared, every plane (infinity when identical)
  std::string problem;  // why not ok ("" when ok)
};
// Judges `bitstream` (from the node: hostile) as an H.264 encoding of `shape` frames of `seed`:
// at most kVideoChallengeMaxAnswerBytes, decodable, exactly shape.frames frames of shape's size,
// PSNR at least kVideoChallengeMinPsnrDb. Never fails: what is wrong is in `problem`.
EncodedAnswerCheck CheckVideoChallengeEncoding(std::string_view seed,
                                               const VideoChallengeShape& shape,
                                               std::string_view bitstream);

// The node's side: validates `request`, decodes its clips with NVDEC (the CUDA hwaccel) and
// encodes its frames with h264_nvenc, or, when `software` (orchestrator config
// test_video_challenge_software, FOR TESTS ONLY), with libavcodec's h264/hevc decoders and
// libx264: the same code otherwise. The NVDEC/NVENC path has NOT RUN on a GPU in our tests (no
// GPU was available where they ran). FAILED_PRECONDITION when the hardware is missing.
absl::StatusOr<node::v1::VideoChallengeResponse> AnswerVideoChallenge(
    const node::v1::VideoChallengeRequest& request, bool software);

}  // namespace switchyard::media

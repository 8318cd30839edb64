#include "common/media/video_challenge.h"

#include <openssl/evp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/hardware.h"

extern "C" {
#include <libavutil/hwcontext.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
}

namespace switchyard::media {
namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// A triangle wave of period 512 over 0..255: smooth gradients without wrap-around edges.
uint8_t Tri(int64_t v) {
  const int64_t m = ((v % 512) + 512) % 512;
  return static_cast<uint8_t>(m < 256 ? m : 511 - m);
}

struct SeedParams {
  uint64_t words[4];
};

SeedParams ParamsOf(std::string_view seed) {
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_Digest(seed.data(), seed.size(), digest, &len, EVP_sha256(), nullptr);
  SeedParams p;
  for (int w = 0; w < 4; ++w) {
    uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v = (v << 8) | digest[w * 8 + b];
    p.words[w] = v;
  }
  return p;
}

bool EvenWithin(int v, int lo, int hi) { return v >= lo && v <= hi && v % 2 == 0; }

// Copies `rows` rows of `width` bytes into the digest.
void AddRows(EVP_MD_CTX* md, const uint8_t* data, int linesize, int width, int rows) {
  for (int r = 0; r < rows; ++r) {
    EVP_DigestUpdate(md, data + static_cast<ptrdiff_t>(r) * linesize, static_cast<size_t>(width));
  }
}

AVPixelFormat PickCuda(AVCodecContext*, const AVPixelFormat* formats) {
  for (const AVPixelFormat* f = formats; *f != AV_PIX_FMT_NONE; ++f) {
    if (*f == AV_PIX_FMT_CUDA) return *f;
  }
  // NVDEC does not take this stream: no format, so the decode fails rather than run in software.
  return AV_PIX_FMT_NONE;
}

}  // namespace

absl::Status ValidateVideoChallenge(const node::v1::VideoChallengeRequest& request) {
  const auto seed = static_cast<int64_t>(request.seed().size());
  if (seed < kVideoChallengeMinSeedBytes || seed > kVideoChallengeMaxSeedBytes) {
    return absl::InvalidArgumentError(absl::StrCat("seed: ", seed, " bytes; ",
                                                   kVideoChallengeMinSeedBytes, " to ",
                                                   kVideoChallengeMaxSeedBytes, " allowed"));
  }
  for (const auto& [name, clip] : {std::pair{"h264", &request.h264()}, {"hevc", &request.hevc()}}) {
    if (static_cast<int64_t>(clip->size()) > kVideoChallengeMaxClipBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", clip->size(), " bytes; at most ", kVideoChallengeMaxClipBytes));
    }
  }
  if (request.encode_frames() != 0) {
    if (request.encode_frames() < 1 || request.encode_frames() > kVideoChallengeMaxFrames) {
      return absl::InvalidArgumentError(absl::StrCat("encode_frames: ", request.encode_frames(),
                                                     "; 0 to ", kVideoChallengeMaxFrames,
                                                     " allowed"));
    }
    if (!EvenWithin(request.encode_width(), kVideoChallengeMinSide, kVideoChallengeMaxWidth) ||
        !EvenWithin(request.encode_height(), kVideoChallengeMinSide, kVideoChallengeMaxHeight)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "encode_width x encode_height: ", request.encode_width(), "x", request.encode_height(),
          "; even, ", kVideoChallengeMinSide, "..", kVideoChallengeMaxWidth, " x ",
          kVideoChallengeMinSide, "..", kVideoChallengeMaxHeight, " allowed"));
    }
  }
  if (request.h264().empty() && request.hevc().empty() && request.encode_frames() == 0) {
    return absl::InvalidArgumentError("nothing to decode or encode");
  }
  return absl::OkStatus();
}

void FillVideoChallengeFrame(std::string_view seed, int index, AVFrame* frame) {
  const SeedParams p = ParamsOf(seed);
  const int64_t ax = 1 + static_cast<int64_t>(p.words[0] % 5);
  const int64_t ay = 1 + static_cast<int64_t>((p.words[0] >> 8) % 5);
  const int64_t af = 3 + static_cast<int64_t>((p.words[0] >> 16) % 7);
  const int64_t dx = 1 + static_cast<int64_t>((p.words[0] >> 24) % 3);  // block motion per frame
  const int w = frame->width, h = frame->height;
  // Luma: a moving gradient plus a seed-dependent 16x16 block texture drifting right.
  for (int y = 0; y < h; ++y) {
    uint8_t* row = frame->data[0] + static_cast<ptrdiff_t>(y) * frame->linesize[0];
    for (int x = 0; x < w; ++x) {
      const int64_t bx = (x + dx * index) / 16, by = y / 16;
      const uint64_t block =
          SplitMix(p.words[1] ^ (static_cast<uint64_t>(bx) << 20) ^ static_cast<uint64_t>(by));
      const int64_t v = ax * x + ay * y + af * index + static_cast<int64_t>(block % 96);
      row[x] = Tri(v);
    }
  }
  // Chroma: slower gradients of their own.
  for (int plane = 1; plane <= 2; ++plane) {
    const uint64_t word = p.words[plane + 1];
    const int64_t cx = 1 + static_cast<int64_t>(word % 3),
                  cy = 1 + static_cast<int64_t>((word >> 8) % 3);
    const int64_t off = static_cast<int64_t>((word >> 16) % 256);
    for (int y = 0; y < (h + 1) / 2; ++y) {
      uint8_t* row = frame->data[plane] + static_cast<ptrdiff_t>(y) * frame->linesize[plane];
      for (int x = 0; x < (w + 1) / 2; ++x) row[x] = Tri(off + cx * x + cy * y + 2 * index);
    }
  }
}

absl::StatusOr<std::string> VideoChallengeFrameDigest(const AVFrame& frame) {
  const auto fmt = static_cast<AVPixelFormat>(frame.format);
  if (fmt != AV_PIX_FMT_YUV420P && fmt != AV_PIX_FMT_NV12) {
    const char* name = av_get_pix_fmt_name(fmt);
    return absl::InvalidArgumentError(absl::StrCat("a frame in ",
                                                   name != nullptr ? name : "an unknown format",
                                                   ", not 8-bit 4:2:0 (yuv420p or nv12)"));
  }
  const int cw = (frame.width + 1) / 2, ch = (frame.height + 1) / 2;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!md || EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr) != 1) {
    return absl::ResourceExhaustedError("cannot start a SHA-256");
  }
  AddRows(md.get(), frame.data[0], frame.linesize[0], frame.width, frame.height);
  if (fmt == AV_PIX_FMT_YUV420P) {
    AddRows(md.get(), frame.data[1], frame.linesize[1], cw, ch);
    AddRows(md.get(), frame.data[2], frame.linesize[2], cw, ch);
  } else {
    std::vector<uint8_t> row(static_cast<size_t>(cw));
    for (int plane = 0; plane < 2; ++plane) {  // U then V, out of NV12's interleaved UV
      for (int y = 0; y < ch; ++y) {
        const uint8_t* uv = frame.data[1] + static_cast<ptrdiff_t>(y) * frame.linesize[1];
        for (int x = 0; x < cw; ++x) row[static_cast<size_t>(x)] = uv[2 * x + plane];
        EVP_DigestUpdate(md.get(), row.data(), row.size());
      }
    }
  }
  std::string out(32, '\0');
  unsigned int len = 0;
  EVP_DigestFinal_ex(md.get(), reinterpret_cast<unsigned char*>(out.data()), &len);
  return out;
}

absl::StatusOr<std::string> EncodeVideoChallengeClip(std::string_view seed, const char* encoder,
                                                     int width, int height, int frames,
                                                     int threads) {
  InitFfmpeg();
  if (!EvenWithin(width, kVideoChallengeMinSide, kVideoChallengeMaxWidth) ||
      !EvenWithin(height, kVideoChallengeMinSide, kVideoChallengeMaxHeight) || frames < 1 ||
      frames > kVideoChallengeMaxFrames) {
    return absl::InvalidArgumentError("video challenge: size or frame count out of range");
  }
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
  if (codec == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("FFmpeg has no ", encoder, " encoder"));
  }
  const std::string_view name(encoder);
  AvCodecContextPtr enc(avcodec_alloc_context3(codec));
  AvFramePtr frame(av_frame_alloc());
  AvPacketPtr packet(av_packet_alloc());
  if (!enc || !frame || !packet) return absl::ResourceExhaustedError("out of memory");
  enc->width = width;
  enc->height = height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->time_base = AVRational{1, 30};
  enc->framerate = AVRational{30, 1};
  enc->bit_rate = kVideoChallengeBitrate;
  enc->gop_size = 12;
  enc->thread_count = threads;
  AVDictionary* opts = nullptr;
  if (name == "libx264") {
    av_dict_set(&opts, "preset", "ultrafast", 0);
  } else if (name == "libx265") {
    av_dict_set(&opts, "preset", "ultrafast", 0);
    av_dict_set(&opts, "x265-params", "log-level=error", 0);
  } else if (name == "h264_nvenc") {
    // NOT RUN on a GPU with NVENC by our tests (none was available): the software path
    // (libx264, forced by test_video_challenge_software) is the tested one.
    av_dict_set(&opts, "preset", "p1", 0);
    av_dict_set(&opts, "rc", "vbr", 0);
  }
  const int opened = avcodec_open2(enc.get(), codec, &opts);
  av_dict_free(&opts);
  if (opened < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", encoder, ": ", AvErrorString(opened)));
  }
  frame->format = AV_PIX_FMT_YUV420P;
  frame->width = width;
  frame->height = height;
  if (int err = av_frame_get_buffer(frame.get(), 0); err < 0) {
    return absl::ResourceExhaustedError(absl::StrCat("frame: ", AvErrorString(err)));
  }
  std::string out;
  auto drain = [&]() -> absl::Status {
    // Bounded: an encoder holds at most its lookahead of packets.
    while (true) {
      const int err = avcodec_receive_packet(enc.get(), packet.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return absl::OkStatus();
      if (err < 0) return absl::InternalError(absl::StrCat(encoder, ": ", AvErrorString(err)));
      out.append(reinterpret_cast<const char*>(packet->data), static_cast<size_t>(packet->size));
      av_packet_unref(packet.get());
    }
  };
  for (int i = 0; i < frames; ++i) {
    if (int err = av_frame_make_writable(frame.get()); err < 0) {
      return absl::ResourceExhaustedError(absl::StrCat("frame: ", AvErrorString(err)));
    }
    FillVideoChallengeFrame(seed, i, frame.get());
    frame->pts = i;
    if (int err = avcodec_send_frame(enc.get(), frame.get()); err < 0) {
      return absl::InternalError(absl::StrCat(encoder, ": ", AvErrorString(err)));
    }
    if (auto st = drain(); !st.ok()) return st;
  }
  avcodec_send_frame(enc.get(), nullptr);
  if (auto st = drain(); !st.ok()) return st;
  return out;
}

absl::Status DecodeVideoChallengeStream(std::string_view stream, AVCodecID codec_id, bool cuda,
                                        const VideoChallengeDecodeLimits& limits,
                                        const std::function<absl::Status(const AVFrame&)>& sink) {
  InitFfmpeg();
  const AVCodec* codec = avcodec_find_decoder(codec_id);
  if (codec == nullptr) return absl::FailedPreconditionError("FFmpeg has no such decoder");
  std::unique_ptr<AVCodecParserContext, decltype(&av_parser_close)> parser(av_parser_init(codec_id),
                                                                           av_parser_close);
  AvCodecContextPtr dec(avcodec_alloc_context3(codec));
  AvPacketPtr packet(av_packet_alloc());
  AvFramePtr frame(av_frame_alloc()), memory(av_frame_alloc());
  if (!parser || !dec || !packet || !frame || !memory) {
    return absl::ResourceExhaustedError("out of memory allocating a decoder");
  }
  dec->thread_count = 1;
  // Bounds what a hostile stream's parameter sets can make the decoder allocate.
  dec->max_pixels = static_cast<int64_t>(limits.max_width) * limits.max_height;
  if (cuda) {
    // NOT RUN on a GPU by our tests (none was available): the software path (test flag
    // test_video_challenge_software) is the tested one.
    if (SharedCudaDevice() == nullptr) {
      return absl::FailedPreconditionError("no CUDA device to decode with NVDEC");
    }
    dec->hw_device_ctx = av_buffer_ref(SharedCudaDevice());
    if (dec->hw_device_ctx == nullptr) return absl::ResourceExhaustedError("out of memory");
    dec->get_format = PickCuda;
  }
  if (int err = avcodec_open2(dec.get(), codec, nullptr); err < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the decoder: ", AvErrorString(err)));
  }
  int frames = 0;
  auto receive = [&]() -> absl::Status {
    // Bounded: each frame counts against max_frames.
    while (true) {
      const int err = avcodec_receive_frame(dec.get(), frame.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return absl::OkStatus();
      if (err < 0) {
        return absl::InvalidArgumentError(absl::StrCat("corrupt stream: ", AvErrorString(err)));
      }
      if (++frames > limits.max_frames) {
        return absl::InvalidArgumentError(absl::StrCat("more than ", limits.max_frames, " frames"));
      }
      if (frame->width > limits.max_width || frame->height > limits.max_height) {
        return absl::InvalidArgumentError(
            absl::StrCat("a ", frame->width, "x", frame->height, " frame"));
      }
      const AVFrame* out = frame.get();
      if (cuda) {
        if (frame->format != AV_PIX_FMT_CUDA) {
          return absl::FailedPreconditionError("a frame was not decoded by NVDEC");
        }
        av_frame_unref(memory.get());
        if (int e = av_hwframe_transfer_data(memory.get(), frame.get(), 0); e < 0) {
          return absl::InternalError(
              absl::StrCat("copying a frame from the GPU: ", AvErrorString(e)));
        }
        memory->width = frame->width;
        memory->height = frame->height;
        out = memory.get();
      }
      absl::Status st = sink(*out);
      av_frame_unref(frame.get());
      if (!st.ok()) return st;
    }
  };
  auto send = [&](const AVPacket* pkt) -> absl::Status {
    const int err = avcodec_send_packet(dec.get(), pkt);
    if (err < 0 && err != AVERROR_EOF) {
      return absl::InvalidArgumentError(absl::StrCat("corrupt stream: ", AvErrorString(err)));
    }
    return receive();
  };
  const auto* data = reinterpret_cast<const uint8_t*>(stream.data());
  size_t left = stream.size();
  // Each call of the parser consumes bytes or, at the end, flushes: bounded by the size.
  for (size_t calls = 0; calls <= stream.size() + 2; ++calls) {
    uint8_t* out = nullptr;
    int out_size = 0;
    const int chunk = static_cast<int>(std::min<size_t>(left, 1 << 16));
    const int used =
        av_parser_parse2(parser.get(), dec.get(), &out, &out_size, left == 0 ? nullptr : data,
                         chunk, AV_NOPTS_VALUE, AV_NOPTS_VALUE, 0);
    if (used < 0) return absl::InvalidArgumentError("corrupt stream: the parser failed");
    data += used;
    left -= static_cast<size_t>(used);
    if (out_size > 0) {
      packet->data = out;
      packet->size = out_size;
      if (auto st = send(packet.get()); !st.ok()) return st;
    }
    if (left == 0 && out_size == 0 && chunk == 0) break;  // parser flushed
  }
  if (auto st = send(nullptr); !st.ok()) return st;
  if (frames == 0) return absl::InvalidArgumentError("no frame decoded");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> VideoChallengeDigests(
    std::string_view stream, AVCodecID codec, bool cuda, const VideoChallengeDecodeLimits& limits) {
  std::vector<std::string> digests;
  absl::Status st = DecodeVideoChallengeStream(stream, codec, cuda, limits, [&](const AVFrame& f) {
    auto digest = VideoChallengeFrameDigest(f);
    if (!digest.ok()) return digest.status();
    digests.push_back(*std::move(digest));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return digests;
}

EncodedAnswerCheck CheckVideoChallengeEncoding(std::string_view seed,
                                               const VideoChallengeShape& shape,
                                               std::string_view bitstream) {
  EncodedAnswerCheck check;
  if (bitstream.empty()) {
    check.problem = "no encoded stream";
    return check;
  }
  if (static_cast<int64_t>(bitstream.size()) > kVideoChallengeMaxAnswerBytes) {
    check.problem = absl::StrCat("an encoded stream of ", bitstream.size(), " bytes (at most ",
                                 kVideoChallengeMaxAnswerBytes, ")");
    return check;
  }
  AvFramePtr source(av_frame_alloc());
  if (!source) {
    check.problem = "out of memory";
    return check;
  }
  source->format = AV_PIX_FMT_YUV420P;
  source->width = shape.width;
  source->height = shape.height;
  if (av_frame_get_buffer(source.get(), 0) < 0) {
    check.problem = "out of memory";
    return check;
  }
  double squares = 0, samples = 0;
  VideoChallengeDecodeLimits limits{shape.width, shape.height, shape.frames};
  const absl::Status st = DecodeVideoChallengeStream(
      bitstream, AV_CODEC_ID_H264, false, limits, [&](const AVFrame& f) -> absl::Status {
        if (f.width != shape.width || f.height != shape.height ||
            (f.format != AV_PIX_FMT_YUV420P && f.format != AV_PIX_FMT_YUVJ420P)) {
          return absl::InvalidArgumentError(absl::StrCat("frame ", check.frames, " is ", f.width,
                                                         "x", f.height, ", not ", shape.width, "x",
                                                         shape.height, " 4:2:0"));
        }
        FillVideoChallengeFrame(seed, check.frames, source.get());
        for (int p = 0; p < 3; ++p) {
          const int w = p == 0 ? shape.width : (shape.width + 1) / 2;
          const int h = p == 0 ? shape.height : (shape.height + 1) / 2;
          for (int y = 0; y < h; ++y) {
            const uint8_t* a = f.data[p] + static_cast<ptrdiff_t>(y) * f.linesize[p];
            const uint8_t* b = source->data[p] + static_cast<ptrdiff_t>(y) * source->linesize[p];
            int64_t sum = 0;
            for (int x = 0; x < w; ++x) {
              const int d = static_cast<int>(a[x]) - static_cast<int>(b[x]);
              sum += d * d;
            }
            squares += static_cast<double>(sum);
            samples += w;
          }
        }
        ++check.frames;
        return absl::OkStatus();
      });
  if (samples > 0) {
    const double mse = squares / samples;
    check.psnr_db =
        mse == 0 ? std::numeric_limits<double>::infinity() : 10 * std::log10(255.0 * 255.0 / mse);
  }
  if (!st.ok()) {
    check.problem = absl::StrCat("the encoded stream: ", st.message());
  } else if (check.frames != shape.frames) {
    check.problem = absl::StrCat(check.frames, " frames encoded of ", shape.frames);
  } else if (check.psnr_db < kVideoChallengeMinPsnrDb) {
    check.problem =
        absl::StrCat("a PSNR of ", std::round(check.psnr_db * 10) / 10,
                     " dB against the seed's frames (at least ", kVideoChallengeMinPsnrDb, " dB)");
  } else {
    check.ok = true;
  }
  return check;
}

absl::StatusOr<node::v1::VideoChallengeResponse> AnswerVideoChallenge(
    const node::v1::VideoChallengeRequest& request, bool software) {
  if (auto st = ValidateVideoChallenge(request); !st.ok()) return st;
  node::v1::VideoChallengeResponse response;
  const VideoChallengeDecodeLimits limits;
  for (const auto& [clip, codec, out] :
       {std::tuple{&request.h264(), AV_CODEC_ID_H264, response.mutable_h264_digests()},
        std::tuple{&request.hevc(), AV_CODEC_ID_HEVC, response.mutable_hevc_digests()}}) {
    if (clip->empty()) continue;
    auto digests = VideoChallengeDigests(*clip, codec, !software, limits);
    if (!digests.ok()) {
      return absl::Status(
          digests.status().code(),
          absl::StrCat(avcodec_get_name(codec), " clip: ", digests.status().message()));
    }
    for (auto& d : *digests) out->Add(std::move(d));
  }
  if (request.encode_frames() > 0) {
    auto encoded = EncodeVideoChallengeClip(request.seed(), software ? "libx264" : "h264_nvenc",
                                            request.encode_width(), request.encode_height(),
                                            request.encode_frames(), 0);
    if (!encoded.ok()) return encoded.status();
    if (static_cast<int64_t>(encoded->size()) > kVideoChallengeMaxAnswerBytes) {
      return absl::InternalError("the encoded frames exceed the answer's limit");
    }
    response.set_encoded_h264(*std::move(encoded));
  }
  response.set_device(software ? "software (test_video_challenge_software)"
                               : "nvdec/nvenc on the CUDA device");
  return response;
}

}  // namespace switchyard::media

#include "common/media/audio_input.h"

#include "absl/strings/str_cat.h"

namespace switchyard::media {
namespace {

absl::Status Corrupt(int err) {
  return absl::InvalidArgumentError(absl::StrCat("audio is corrupt: ", AvErrorString(err)));
}

}  // namespace

absl::StatusOr<AudioInputPtr> AudioInput::Open(std::string_view data) {
  InitFfmpeg();
  if (data.empty()) return absl::InvalidArgumentError("audio is empty");
  AudioInputPtr input(new AudioInput());
  auto demuxer = OpenMemoryDemuxer(data, kAudioDemuxers);
  if (!demuxer.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio could not be read: ", demuxer.status().message()));
  }
  input->demuxer_ = *std::move(demuxer);
  AVFormatContext* fmt = input->format();
  const AVCodec* codec = nullptr;
  input->stream_index_ = av_find_best_stream(fmt, AVMEDIA_TYPE_AUDIO, -1, -1, &codec, 0);
  if (input->stream_index_ < 0 || codec == nullptr) {
    return absl::InvalidArgumentError("audio has no decodable audio stream");
  }
  input->decoder_.reset(avcodec_alloc_context3(codec));
  input->packet_.reset(av_packet_alloc());
  input->frame_.reset(av_frame_alloc());
  if (!input->decoder_ || !input->packet_ || !input->frame_) {
    return absl::ResourceExhaustedError("out of memory allocating the audio decoder");
  }
  AVCodecContext* dec = input->decoder_.get();
  if (int err = avcodec_parameters_to_context(dec, input->stream()->codecpar); err < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio stream parameters are invalid: ", AvErrorString(err)));
  }
  dec->pkt_timebase = input->stream()->time_base;
  if (int err = avcodec_open2(dec, codec, nullptr); err < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio decoder could not be opened: ", AvErrorString(err)));
  }
  return input;
}

absl::Status AudioInput::Drain(const std::function<absl::Status(const AVFrame&)>& on_frame) {
  while (true) {
    int err = avcodec_receive_frame(decoder_.get(), frame_.get());
    if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return absl::OkStatus();
    if (err < 0) return Corrupt(err);
    absl::Status st = on_frame(*frame_);
    av_frame_unref(frame_.get());
    if (!st.ok()) return st;
  }
}

absl::Status AudioInput::Decode(const std::function<absl::Status(const AVFrame&)>& on_frame) {
  int corrupt_packets = 0;
  while (true) {
    int err = av_read_frame(format(), packet_.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) return Corrupt(err);
    if (packet_->stream_index != stream_index_) {
      av_packet_unref(packet_.get());
      continue;
    }
    err = avcodec_send_packet(decoder_.get(), packet_.get());
    av_packet_unref(packet_.get());
    if (err == AVERROR_INVALIDDATA) {
      // A damaged packet in otherwise good audio is skipped, as ffmpeg does; a stream of them is
      // corrupt input.
      if (++corrupt_packets > kMaxCorruptPackets) return Corrupt(err);
      continue;
    }
    if (err < 0 && err != AVERROR(EAGAIN)) return Corrupt(err);
    if (absl::Status st = Drain(on_frame); !st.ok()) return st;
  }
  avcodec_send_packet(decoder_.get(), nullptr);
  return Drain(on_frame);
}

}  // namespace switchyard::media

// An audio stream decoded from bytes in memory: the demuxer, its best audio stream and that
// stream's decoder. Metering (counting an input's milliseconds) and the audio pipelines
// (decoding it for a model) both read audio through it, so they accept and refuse the same
// inputs.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/media/ffmpeg_util.h"

namespace switchyard::media {

// Demuxers accepted for audio input (names as in `ffmpeg -demuxers`).
inline constexpr const char* kAudioDemuxers =
    "wav,w64,mp3,mov,ogg,flac,matroska,aac,aiff,caf,amr,au,wv,ape,tta,ac3,eac3,dts,oga";

class AudioInput;
using AudioInputPtr = std::unique_ptr<AudioInput>;

class AudioInput {
 public:
  // Damaged packets skipped (as ffmpeg skips them) before the input counts as corrupt.
  static constexpr int kMaxCorruptPackets = 8;

  // Opens `data` (which must outlive the result; empty is refused) with one of kAudioDemuxers and
  // the decoder of its best audio stream. INVALID_ARGUMENT for what is not decodable audio;
  // RESOURCE_EXHAUSTED when allocation fails.
  static absl::StatusOr<AudioInputPtr> Open(std::string_view data);

  AVFormatContext* format() const { return demuxer_->format.get(); }
  AVStream* stream() const { return format()->streams[stream_index_]; }
  const AVCodecContext* decoder() const { return decoder_.get(); }

  // Decodes the stream to its end, calling `on_frame` with each decoded frame (unreferenced once
  // it returns). Call once. INVALID_ARGUMENT ("audio is corrupt: ...") for a read or decode error
  // or more than kMaxCorruptPackets damaged packets; an error from `on_frame` stops decoding and
  // is returned as it is.
  absl::Status Decode(const std::function<absl::Status(const AVFrame&)>& on_frame);

 private:
  AudioInput() = default;
  // Receives every frame the decoder has ready.
  absl::Status Drain(const std::function<absl::Status(const AVFrame&)>& on_frame);

  std::unique_ptr<MemoryDemuxer> demuxer_;
  int stream_index_ = -1;
  AvCodecContextPtr decoder_;
  AvPacketPtr packet_;
  AvFramePtr frame_;
};

}  // namespace switchyard::media

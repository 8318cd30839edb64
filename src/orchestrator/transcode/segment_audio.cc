#include "orchestrator/transcode/segment_audio.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "orchestrator/transcode/segment_input.h"

namespace switchyard::orchestrator::transcode {
namespace {

using media::AvPacketPtr;

constexpr int kMaxAudioStreams = 8;

bool AudioFitsContainer(AVCodecID id, const std::string& container) {
  if (container == "mpegts") {
    return id == AV_CODEC_ID_AAC || id == AV_CODEC_ID_MP3 || id == AV_CODEC_ID_MP2 ||
           id == AV_CODEC_ID_AC3 || id == AV_CODEC_ID_EAC3 || id == AV_CODEC_ID_OPUS;
  }
  const AVOutputFormat* mp4 = av_guess_format("mp4", nullptr, nullptr);
  return mp4 != nullptr && avformat_query_codec(mp4, id, FF_COMPLIANCE_NORMAL) == 1;
}

}  // namespace

SegmentAudio::SegmentAudio(const TranscodeOptions& options) : options_(options) {}

int SegmentAudio::Select(AVFormatContext* fmt, const AVStream* video) {
  fmt_ = fmt;
  carried_.assign(fmt->nb_streams, false);
  int count = 0;
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    AVStream* st = fmt->streams[i];
    const AVCodecParameters* p = st->codecpar;
    const bool carry =
        p->codec_type == AVMEDIA_TYPE_AUDIO && count < kMaxAudioStreams &&
        p->codec_id != AV_CODEC_ID_NONE && p->sample_rate > 0 && p->ch_layout.nb_channels > 0 &&
        (options_.audio_codec == "aac" ? avcodec_find_decoder(p->codec_id) != nullptr
                                       : AudioFitsContainer(p->codec_id, options_.container));
    if (carry) {
      carried_[i] = true;
      ++count;
    } else if (st != video) {
      st->discard = AVDISCARD_ALL;
    }
  }
  return count;
}

absl::Status SegmentAudio::PrepareFilters(std::string_view segment, int64_t max_packets,
                                          const Cancellation& cancellation) {
  filters_.clear();
  filters_.resize(fmt_->nb_streams);
  configs_.assign(fmt_->nb_streams, std::string());
  if (options_.container != "mp4" || options_.audio_codec == "aac") return absl::OkStatus();
  int needed = 0;
  for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
    const AVCodecParameters* par = fmt_->streams[i]->codecpar;
    if (!carried_[i] || par->codec_id != AV_CODEC_ID_AAC || par->extradata_size > 0) continue;
    const AVBitStreamFilter* filter = av_bsf_get_by_name("aac_adtstoasc");
    AVBSFContext* raw = nullptr;
    if (filter == nullptr || av_bsf_alloc(filter, &raw) < 0) {
      return absl::InternalError("cannot create the aac_adtstoasc filter");
    }
    media::AvBsfContextPtr bsf(raw);
    if (avcodec_parameters_copy(bsf->par_in, par) < 0) {
      return absl::ResourceExhaustedError("cannot copy audio parameters");
    }
    bsf->time_base_in = fmt_->streams[i]->time_base;
    if (av_bsf_init(bsf.get()) < 0) {
      carried_[i] = false;  // cannot be carried into MP4: leave it out
      continue;
    }
    filters_[i] = std::move(bsf);
    ++needed;
  }
  if (needed == 0) return absl::OkStatus();

  // The AudioSpecificConfig comes from the first ADTS header, and the MP4 header (written before
  // any packet) needs it: find each stream's first packet with a second pass over the input.
  auto scan = media::OpenMemoryDemuxer(segment, kSegmentFormats);
  if (!scan.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("segment: ", scan.status().message()));
  }
  AVFormatContext* scan_fmt = (*scan)->format.get();
  AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return absl::ResourceExhaustedError("cannot allocate a packet");
  for (int64_t n = 0; needed > 0 && n < max_packets; ++n) {
    if (cancellation.Cancelled()) return absl::CancelledError("transcode cancelled");
    if (av_read_frame(scan_fmt, pkt.get()) < 0) break;
    const int index = pkt->stream_index;
    if (index >= 0 && static_cast<size_t>(index) < filters_.size() && filters_[index] &&
        configs_[index].empty()) {
      // The filter hands the config out as new-extradata side data on its first packet.
      AVBSFContext* bsf = filters_[index].get();
      if (av_bsf_send_packet(bsf, pkt.get()) >= 0) {
        while (av_bsf_receive_packet(bsf, pkt.get()) >= 0) {
          size_t size = 0;
          const uint8_t* data =
              av_packet_get_side_data(pkt.get(), AV_PKT_DATA_NEW_EXTRADATA, &size);
          if (data != nullptr && size > 0 && configs_[index].empty()) {
            configs_[index].assign(reinterpret_cast<const char*>(data), size);
            --needed;
          }
          av_packet_unref(pkt.get());
        }
      }
      av_bsf_flush(bsf);
    }
    av_packet_unref(pkt.get());
  }
  for (size_t i = 0; i < filters_.size(); ++i) {
    if (filters_[i] && configs_[i].empty()) {
      filters_[i].reset();  // no usable ADTS header: leave this stream out
      carried_[i] = false;
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentAudio::PrepareEncoders() {
  encoders_.clear();
  if (options_.audio_codec != "aac") return absl::OkStatus();
  encoders_.resize(fmt_->nb_streams);
  for (unsigned i = 0; i < fmt_->nb_streams; ++i) {
    if (!carried_[i]) continue;
    auto encoder = media::AacEncoder::Create(
        fmt_->streams[i]->codecpar, fmt_->streams[i]->time_base, options_.audio_bitrate_bps);
    if (!encoder.ok()) {
      if (encoder.status().code() != absl::StatusCode::kInvalidArgument) return encoder.status();
      carried_[i] = false;  // undecodable audio: left out, as the copy path leaves out audio
      continue;             // the container cannot carry
    }
    encoders_[i] = *std::move(encoder);
  }
  return absl::OkStatus();
}

bool SegmentAudio::any() const {
  return std::find(carried_.begin(), carried_.end(), true) != carried_.end();
}

void SegmentAudio::DropAll() { std::fill(carried_.begin(), carried_.end(), false); }

absl::StatusOr<int> SegmentAudio::AddOutputStream(unsigned stream, AVFormatContext* out) const {
  AVStream* st = avformat_new_stream(out, nullptr);
  if (st == nullptr) return absl::ResourceExhaustedError("cannot add a stream");
  if (stream < encoders_.size() && encoders_[stream]) {
    if (avcodec_parameters_from_context(st->codecpar, encoders_[stream]->encoder()) < 0) {
      return absl::InternalError("cannot set the output audio parameters");
    }
    st->time_base = encoders_[stream]->time_base();
    return st->index;
  }
  const AVStream* in = fmt_->streams[stream];
  if (avcodec_parameters_copy(st->codecpar,
                              filters_[stream] ? filters_[stream]->par_out : in->codecpar) < 0) {
    return absl::InternalError("cannot copy the audio parameters");
  }
  st->codecpar->codec_tag = 0;
  if (!configs_[stream].empty()) {
    const std::string& config = configs_[stream];
    av_freep(&st->codecpar->extradata);
    st->codecpar->extradata_size = 0;
    st->codecpar->extradata =
        static_cast<uint8_t*>(av_mallocz(config.size() + AV_INPUT_BUFFER_PADDING_SIZE));
    if (st->codecpar->extradata == nullptr) return absl::ResourceExhaustedError("out of memory");
    std::memcpy(st->codecpar->extradata, config.data(), config.size());
    st->codecpar->extradata_size = static_cast<int>(config.size());
  }
  st->time_base = in->time_base;
  return st->index;
}

absl::Status SegmentAudio::Process(AVPacket* packet, const PacketSink& sink) {
  const int index = packet->stream_index;
  const AVStream* in = fmt_->streams[index];
  if (static_cast<size_t>(index) < encoders_.size() && encoders_[index]) {
    media::AacEncoder& encoder = *encoders_[index];
    std::vector<AvPacketPtr> encoded;
    if (auto status = encoder.Encode(packet, &encoded); !status.ok()) return status;
    for (AvPacketPtr& p : encoded) {
      p->stream_index = index;
      if (auto status = sink(p.get(), encoder.time_base()); !status.ok()) return status;
    }
    return absl::OkStatus();
  }
  AVBSFContext* bsf = filters_[index].get();
  if (bsf == nullptr) return sink(packet, in->time_base);
  if (av_bsf_send_packet(bsf, packet) < 0) {  // takes the packet's data
    av_bsf_flush(bsf);
    return absl::OkStatus();  // a malformed ADTS frame: drop it
  }
  if (!filtered_) filtered_.reset(av_packet_alloc());
  if (!filtered_) return absl::ResourceExhaustedError("cannot allocate a packet");
  AVPacket* filtered = filtered_.get();
  while (av_bsf_receive_packet(bsf, filtered) >= 0) {
    filtered->stream_index = index;
    absl::Status status = sink(filtered, in->time_base);
    av_packet_unref(filtered);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SegmentAudio::Flush(const PacketSink& sink) {
  for (size_t i = 0; i < encoders_.size(); ++i) {
    if (!encoders_[i]) continue;
    std::vector<AvPacketPtr> encoded;
    if (auto status = encoders_[i]->Encode(nullptr, &encoded); !status.ok()) return status;
    for (AvPacketPtr& p : encoded) {
      p->stream_index = static_cast<int>(i);
      if (auto status = sink(p.get(), encoders_[i]->time_base()); !status.ok()) return status;
    }
  }
  return absl::OkStatus();
}

}  // namespace switchyard::orchestrator::transcode

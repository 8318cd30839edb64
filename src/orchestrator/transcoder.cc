#include "orchestrator/transcoder.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/media/audio_encoder.h"
#include "common/media/ffmpeg_util.h"
#include "common/media/filter_scaler.h"
#include "common/media/hardware.h"

extern "C" {
#include <libavutil/hwcontext.h>
#include <libavutil/mathematics.h>
#include <libavutil/opt.h>
#include <libavutil/pixdesc.h>
}

namespace switchyard::orchestrator {

namespace internal {

// A rendition's scaler and what it was made for.
struct Scaler {
  media::SwsContextPtr sws;
  int src_width = 0;
  int src_height = 0;
  int src_format = -1;
  int colorspace = -1;
  int range = -1;
  int dst_width = 0;
  int dst_height = 0;
  // GPU-decoded frames: scale_cuda + download (media::FilterScaler), remade when the frames, their
  // surfaces' pool or the output size change. After it failed to build once, frames go to memory
  // and through `sws` instead.
  media::FilterScalerPtr gpu;
  const void* gpu_frames_ctx = nullptr;  // identity of the pool `gpu` was made for
  bool gpu_failed = false;
};

struct StreamState {
  media::AvCodecContextPtr decoder;
  media::AvCodecParametersPtr decoder_params;  // what `decoder` was opened for
  std::vector<Scaler> scalers;                 // per rendition
  std::vector<int64_t> last_pts;               // per rendition, in last_time_base; or NOPTS
  std::vector<AVRational> last_time_base;
  std::vector<RenditionSpec> resolved;  // the ladder as last resolved from a video segment
  // Per rendition, per audio output stream (in order): the last audio DTS muxed, in seconds.
  std::vector<std::vector<double>> last_audio_seconds;
  StreamStateStats stats;
};

void StreamStateDeleter::operator()(StreamState* state) const { delete state; }

StreamStatePtr NewStreamState() { return StreamStatePtr(new StreamState()); }

StreamStateStats GetStreamStateStats(const StreamState& state) { return state.stats; }

}  // namespace internal

namespace {

using media::AvBsfContextPtr;
using media::AvCodecContextPtr;
using media::AvCodecParametersPtr;
using media::AvErrorString;
using media::AvFramePtr;
using media::AvPacketPtr;
using media::MemoryDemuxer;
using media::MemoryMuxer;
using media::SwsContextPtr;

constexpr const char* kPresets[] = {"ultrafast", "superfast", "veryfast", "faster",  "fast",
                                    "medium",    "slow",      "slower",   "veryslow"};
constexpr const char* kProfiles[] = {"baseline", "main", "high"};
constexpr double kMaxFps = 240;
constexpr double kMaxGopSeconds = 60;
constexpr int64_t kMaxBitrate = 1'000'000'000;
constexpr double kDefaultGopSeconds = 2;
// Frame rate conversion fills timestamp gaps up to this long with duplicates; a longer gap is a
// discontinuity and is skipped over instead.
constexpr double kMaxFillSeconds = 1.0;
constexpr int kMaxAudioStreams = 8;
// A session's segment may overlap the previous one by up to this much (the overlap is dropped);
// starting further back is a discontinuity.
constexpr double kMaxOverlapSeconds = 1.0;
// Demuxers we accept; anything else (playlists, images, raw streams) is not a segment.
constexpr const char* kInputFormats = "mpegts,mov,mp4,m4a,3gp,3g2,mj2";

std::string Field(size_t index, const char* field) {
  return absl::StrCat("renditions[", index, "].", field);
}

// A muxer rejecting data (bad timestamps or codec parameters copied from the input) means a corrupt
// input; anything else (out of memory, I/O) is our failure.
absl::Status MuxError(size_t index, const char* what, int err) {
  const std::string message =
      absl::StrCat("rendition ", index, ": ", what, " failed: ", AvErrorString(err));
  if (err == AVERROR_INVALIDDATA || err == AVERROR(EINVAL) || err == AVERROR_PATCHWELCOME) {
    return absl::InvalidArgumentError(absl::StrCat("segment: corrupt input? ", message));
  }
  return absl::InternalError(message);
}

absl::Status Invalid(size_t index, const char* field, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat(Field(index, field), ": ", what));
}

// 2 * round(x / 2), at least 2.
int RoundEven(double x) {
  const double r = 2 * std::round(x / 2);
  if (!(r >= 2)) return 2;
  if (r > INT_MAX - 1) return INT_MAX - 1;
  return static_cast<int>(r);
}

bool IsFullRange(AVPixelFormat fmt) {
  return fmt == AV_PIX_FMT_YUVJ420P || fmt == AV_PIX_FMT_YUVJ422P || fmt == AV_PIX_FMT_YUVJ444P ||
         fmt == AV_PIX_FMT_YUVJ440P || fmt == AV_PIX_FMT_YUVJ411P;
}

AVPixelFormat UnJ(AVPixelFormat fmt) {
  switch (fmt) {
    case AV_PIX_FMT_YUVJ420P:
      return AV_PIX_FMT_YUV420P;
    case AV_PIX_FMT_YUVJ422P:
      return AV_PIX_FMT_YUV422P;
    case AV_PIX_FMT_YUVJ444P:
      return AV_PIX_FMT_YUV444P;
    case AV_PIX_FMT_YUVJ440P:
      return AV_PIX_FMT_YUV440P;
    case AV_PIX_FMT_YUVJ411P:
      return AV_PIX_FMT_YUV411P;
    default:
      return fmt;
  }
}

bool AudioFitsContainer(AVCodecID id, const std::string& container) {
  if (container == "mpegts") {
    return id == AV_CODEC_ID_AAC || id == AV_CODEC_ID_MP3 || id == AV_CODEC_ID_MP2 ||
           id == AV_CODEC_ID_AC3 || id == AV_CODEC_ID_EAC3 || id == AV_CODEC_ID_OPUS;
  }
  const AVOutputFormat* mp4 = av_guess_format("mp4", nullptr, nullptr);
  return mp4 != nullptr && avformat_query_codec(mp4, id, FF_COMPLIANCE_NORMAL) == 1;
}

// Checks one ladder entry on its own (sizes needing the input are resolved later) and fills in
// defaults.
absl::Status ValidateSpec(size_t i, const TranscodeOptions& options, RenditionSpec& spec) {
  if (spec.width < 0 || (spec.width % 2) != 0) {
    return Invalid(i, "width", absl::StrCat("must be even and positive, or 0; got ", spec.width));
  }
  if (spec.height < 0 || (spec.height % 2) != 0) {
    return Invalid(i, "height", absl::StrCat("must be even and positive, or 0; got ", spec.height));
  }
  if (spec.width > options.max_width) {
    return Invalid(i, "width",
                   absl::StrCat(spec.width, " is more than the limit of ", options.max_width));
  }
  if (spec.height > options.max_height) {
    return Invalid(i, "height",
                   absl::StrCat(spec.height, " is more than the limit of ", options.max_height));
  }
  if (spec.bitrate_bps <= 0 || spec.bitrate_bps > kMaxBitrate) {
    return Invalid(i, "bitrate_bps",
                   absl::StrCat("must be in (0, ", kMaxBitrate, "]; got ", spec.bitrate_bps));
  }
  if (spec.fps_num != 0 || spec.fps_den != 0) {
    if (spec.fps_num <= 0 || spec.fps_den <= 0 ||
        static_cast<double>(spec.fps_num) / spec.fps_den > kMaxFps) {
      return Invalid(i, "fps_num/fps_den",
                     absl::StrCat("must be 0/0 (keep the input rate) or a positive rate up to ",
                                  kMaxFps, "; got ", spec.fps_num, "/", spec.fps_den));
    }
  }
  if (!std::isfinite(spec.gop_seconds) || spec.gop_seconds < 0 ||
      spec.gop_seconds > kMaxGopSeconds) {
    return Invalid(i, "gop_seconds",
                   absl::StrCat("must be in [0, ", kMaxGopSeconds, "]; got ", spec.gop_seconds));
  }
  if (spec.gop_seconds == 0) spec.gop_seconds = kDefaultGopSeconds;
  if (spec.preset.empty()) spec.preset = "veryfast";
  if (std::find(std::begin(kPresets), std::end(kPresets), spec.preset) == std::end(kPresets)) {
    return Invalid(i, "preset",
                   absl::StrCat("unknown preset \"", spec.preset,
                                "\" (ultrafast, superfast, veryfast, faster, fast, medium, slow, "
                                "slower, veryslow)"));
  }
  if (spec.profile.empty()) spec.profile = "main";
  if (std::find(std::begin(kProfiles), std::end(kProfiles), spec.profile) == std::end(kProfiles)) {
    return Invalid(i, "profile",
                   absl::StrCat("unknown profile \"", spec.profile, "\" (baseline, main or high)"));
  }
  return absl::OkStatus();
}

// Whether `codec` can decode through a CUDA device here (its hwaccel, NVDEC) and one is open.
bool CudaDecodes(const AVCodec* codec) {
  if (media::SharedCudaDevice() == nullptr) return false;
  for (int i = 0;; ++i) {
    const AVCodecHWConfig* config = avcodec_get_hw_config(codec, i);
    if (config == nullptr) return false;
    if ((config->methods & AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX) != 0 &&
        config->device_type == AV_HWDEVICE_TYPE_CUDA) {
      return true;
    }
  }
}

// NVENC's presets p1 (fastest) .. p7 (best) for the x264 preset names a rendition uses.
const char* NvencPreset(const std::string& x264_preset) {
  static constexpr std::pair<const char*, const char*> kMap[] = {
      {"ultrafast", "p1"}, {"superfast", "p1"}, {"veryfast", "p2"},
      {"faster", "p3"},    {"fast", "p4"},      {"medium", "p5"},
      {"slow", "p6"},      {"slower", "p7"},    {"veryslow", "p7"}};
  for (const auto& [x264, nvenc] : kMap) {
    if (x264_preset == x264) return nvenc;
  }
  return "p4";
}

// get_format for a decoder given a CUDA device: the GPU format when the hwaccel takes the stream,
// else the first software format (e.g. 4:4:4 that NVDEC does not decode).
AVPixelFormat PickCudaFormat(AVCodecContext*, const AVPixelFormat* formats) {
  for (const AVPixelFormat* f = formats; *f != AV_PIX_FMT_NONE; ++f) {
    if (*f == AV_PIX_FMT_CUDA) return *f;
  }
  for (const AVPixelFormat* f = formats; *f != AV_PIX_FMT_NONE; ++f) {
    const AVPixFmtDescriptor* desc = av_pix_fmt_desc_get(*f);
    if (desc != nullptr && (desc->flags & AV_PIX_FMT_FLAG_HWACCEL) == 0) return *f;
  }
  return AV_PIX_FMT_NONE;
}

// Per-rendition state: scaler, fps conversion, encoder and muxer.
struct Rendition {
  size_t index = 0;
  RenditionSpec spec;
  int width = 0;
  int height = 0;
  bool passthrough_rate = false;
  AVRational rate{0, 1};       // output frame rate (the guessed input rate when passing through)
  AVRational time_base{0, 1};  // encoder time base
  int64_t max_fill_slots = 0;  // fps conversion: longest gap filled with duplicates

  AvCodecContextPtr encoder;
  std::string data;  // muxer output; declared before the muxer writing into it
  std::unique_ptr<MemoryMuxer> muxer;
  AVStream* video_stream = nullptr;
  std::vector<int> audio_map;           // input stream index -> output stream index, or -1
  std::vector<int64_t> last_audio_dts;  // per output stream, in its time base
  std::vector<AVRational> muxer_audio_time_bases;  // per output stream; {0, 0} if not audio
  std::vector<bool> audio_floor;  // per output stream: last_audio_dts is the previous
                                  // segment's, not yet checked against this one

  internal::Scaler own_scaler;
  internal::Scaler* scaler = &own_scaler;  // or the stream's, kept between segments

  // Frame rate conversion: the latest input frame and the next output slot (in time_base units).
  AvFramePtr pending;
  AvFramePtr pending_scaled;
  int64_t next_slot = 0;
  bool have_pending = false;

  int64_t last_pts = AV_NOPTS_VALUE;  // last pts sent to the encoder
  int64_t last_dts = AV_NOPTS_VALUE;  // last video dts muxed, in the output stream's time base
  // A session's segment following the previous one: its last pts (in floor_time_base).
  int64_t floor_pts = AV_NOPTS_VALUE;
  AVRational floor_time_base{0, 1};
  int64_t frames = 0;
  int64_t scalers_created = 0;

  AvPacketPtr out_packet;  // the encoder's and the audio copy's packet, this rendition's only
  // Set when the renditions run in parallel: this rendition's frames and audio packets go through
  // its worker's queue, in order, and only that thread touches the fields above.
  std::unique_ptr<class RenditionWorker> worker;
};

// One unit of a rendition's work, in stream order: a decoded frame to convert, scale and encode,
// an audio packet to copy into its muxer, or the end of the segment (flush and finish).
struct RenditionWork {
  enum class Kind { kFrame, kAudio, kFinish };
  Kind kind = Kind::kFrame;
  AvFramePtr frame;  // kFrame: a new reference to the decoded frame
  int64_t ts = 0;    // kFrame: its timestamp in the input video time base
  // kFrame: the first frame of a session's segment that starts well before the previous one
  // ended (a discontinuity): this rendition's floor is lifted if it has not encoded yet.
  bool lift_floor = false;
  AvPacketPtr packet;          // kAudio
  AVRational time_base{0, 1};  // kAudio: the packet's time base
};

// A thread that does one rendition's work, fed by the decoding thread through a short bounded
// queue (the decoder waits when it is full, so memory stays a few frames per rendition). The
// first error is kept; later work is dropped. The destructor closes the queue and joins.
class RenditionWorker {
 public:
  using Process = std::function<absl::Status(RenditionWork&)>;
  RenditionWorker(Process process, std::atomic<bool>* any_failed)
      : process_(std::move(process)), any_failed_(any_failed) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~RenditionWorker() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  RenditionWorker(const RenditionWorker&) = delete;
  RenditionWorker& operator=(const RenditionWorker&) = delete;

  // Blocks while the queue is full. Returns false once this worker has failed.
  bool Post(RenditionWork work) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return queue_.size() < kMaxQueued || !status_.ok(); });
    if (!status_.ok()) return false;
    queue_.push_back(std::move(work));
    cv_.notify_all();
    return true;
  }
  // Waits until everything posted has been done; returns the first error.
  absl::Status Drain() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return (queue_.empty() && !busy_) || !status_.ok(); });
    return status_;
  }

 private:
  static constexpr size_t kMaxQueued = 4;

  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closed
      RenditionWork work = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      lock.unlock();
      absl::Status status = status_ok_ ? process_(work) : absl::OkStatus();
      work = RenditionWork();  // drop the frame/packet reference outside the lock
      lock.lock();
      busy_ = false;
      if (!status.ok() && status_.ok()) {
        status_ = std::move(status);
        status_ok_ = false;
        any_failed_->store(true);
        queue_.clear();
      }
      cv_.notify_all();
    }
  }

  Process process_;
  std::atomic<bool>* any_failed_;
  std::mutex mu_;
  std::condition_variable cv_;
  // queue_, status_, busy_ and closed_ are guarded by mu_ (a std::mutex: clang's analysis cannot
  // check annotations on it).
  std::deque<RenditionWork> queue_;
  absl::Status status_;
  bool status_ok_ = true;  // status_.ok(), read by the worker thread without the lock
  bool busy_ = false;
  bool closed_ = false;
  std::thread thread_;
};

class SegmentTranscoder {
 public:
  SegmentTranscoder(std::string_view segment, const std::vector<RenditionSpec>& ladder,
                    const TranscodeOptions& options, const std::function<bool()>& cancelled,
                    internal::StreamState* state = nullptr, internal::StreamSegment how = {})
      : segment_(segment),
        ladder_(ladder),
        options_(options),
        cancelled_(cancelled),
        state_(state),
        how_(how) {}
  // Workers first: they use this object's members until joined.
  ~SegmentTranscoder() {
    for (auto& r : renditions_) r->worker.reset();
  }

  absl::StatusOr<TranscodeResult> Run();

 private:
  absl::Status ValidateOptions();
  absl::Status OpenInput();
  absl::Status OpenVideo();
  absl::Status CheckTruncation();
  bool HasVideoKeyframe();
  absl::Status PrepareAudioFilters();
  absl::Status SetUpRendition(Rendition& r);
  // Whether a GPU-decoded frame is scaled on the GPU: gpu_scale on, 8-bit 4:2:0 surfaces and
  // limited range (what scale_cuda converts to yuv420p without a colour change).
  bool ScalesOnGpu(const AVFrame* frame) const;
  absl::StatusOr<AvFramePtr> ScaleOnGpu(Rendition& r, AVFrame* src);
  absl::Status OpenEncoder(Rendition& r);  // NVENC or libx264, as options_.hw_encode says
  absl::Status OpenEncoderWith(Rendition& r, const char* encoder_name);
  absl::Status OpenMuxer(Rendition& r);
  absl::Status ReadAll();
  absl::Status Decode(const AVPacket* packet);
  absl::Status OnFrame(AVFrame* frame);
  absl::Status Push(Rendition& r, AVFrame* frame, int64_t ts);
  absl::Status Emit(Rendition& r, int64_t pts);
  absl::StatusOr<AvFramePtr> Scale(Rendition& r, AVFrame* src);
  absl::Status Encode(Rendition& r, AVFrame* frame);
  absl::Status CopyAudio(AVPacket* packet);
  absl::Status PrepareAudioEncoders();
  // Writes out what the AAC encoders still hold (end of the segment).
  absl::Status FlushAudioEncoders();
  absl::Status WriteAudio(AVPacket* packet, AVRational time_base);
  absl::Status WriteAudioTo(Rendition& r, AVPacket* packet, AVRational time_base);
  absl::Status Finish(Rendition& r);
  // Starts one worker per rendition when they are to run in parallel.
  void StartWorkers();
  // Does `work` for `r` now, or queues it on r's worker.
  absl::Status Dispatch(Rendition& r, RenditionWork work);
  absl::Status DoWork(Rendition& r, RenditionWork& work);
  // Finishes every rendition (on its worker, if it has one) and returns the first error.
  absl::Status FinishAll();
  absl::StatusOr<TranscodeResult> FinishAudioOnly();
  TranscodeResult Collect(TranscodeResult result);
  // The caller's check runs only on the thread that runs this transcoder (the gRPC handler's):
  // on a synchronous gRPC server ServerContext::IsCancelled plucks the call's own completion
  // queue, so only the handler's thread should touch it. Rendition threads read what the check
  // last answered there (checked before every decoded frame).
  bool Cancelled() const {
    if (std::this_thread::get_id() != owner_thread_) return cancel_seen_.load();
    if (cancel_seen_.load()) return true;
    if (!cancelled_ || !cancelled_()) return false;
    cancel_seen_.store(true);
    return true;
  }

  std::string_view segment_;
  const std::vector<RenditionSpec>& ladder_;
  TranscodeOptions options_;
  const std::function<bool()>& cancelled_;
  const std::thread::id owner_thread_ = std::this_thread::get_id();
  mutable std::atomic<bool> cancel_seen_{false};
  internal::StreamState* state_;  // null for a one-off segment
  internal::StreamSegment how_;

  std::unique_ptr<MemoryDemuxer> demuxer_;
  AVStream* video_ = nullptr;
  AVRational input_rate_{0, 1};
  AVRational display_aspect_{1, 1};
  std::vector<bool> copy_audio_;  // per input stream
  // Per input stream: aac_adtstoasc for ADTS AAC going into MP4 (which wants raw AAC and an
  // AudioSpecificConfig in the header); null otherwise.
  std::vector<AvBsfContextPtr> audio_filters_;
  std::vector<std::string> audio_configs_;  // per input stream: the AudioSpecificConfig found
  // Per input stream, when audio is re-encoded: its AAC encoder (one for all renditions).
  std::vector<media::AacEncoderPtr> audio_encoders_;
  AvCodecContextPtr decoder_;      // a one-off segment's decoder
  AVCodecContext* dec_ = nullptr;  // decoder_ or the stream's
  bool audio_only_ = false;        // no video stream (a session's later segment)
  double audio_start_ = 0;         // audio-only: seconds covered by the copied audio
  double audio_end_ = 0;
  bool have_audio_time_ = false;
  AvFramePtr frame_;
  AvFramePtr gpu_frame_;  // frame_ copied from GPU memory, when decoded there
  bool hardware_decoded_ = false;
  std::atomic<bool> hardware_encoded_{false};  // written by rendition threads
  AvPacketPtr packet_;
  AvPacketPtr out_packet_;
  std::vector<std::unique_ptr<Rendition>> renditions_;
  std::atomic<bool> worker_failed_{false};

  int64_t input_frames_ = 0;
  int64_t decode_errors_ = 0;
  int64_t first_ts_ = AV_NOPTS_VALUE;
  int64_t end_ts_ = AV_NOPTS_VALUE;   // max of ts + duration
  int64_t last_ts_ = AV_NOPTS_VALUE;  // ts of the latest decoded frame
  int64_t last_duration_ = 0;
  int64_t ts_offset_ = 0;  // added to decoded timestamps after they went backwards
  int64_t video_packets_ = 0;
  bool seen_keyframe_ = false;
  std::vector<AvPacketPtr> before_keyframe_;  // video packets read before any keyframe
  bool intra_entry_ = false;  // none was flagged: decoding starts at the first intra frame
  bool seen_intra_ = false;
};

absl::Status SegmentTranscoder::ValidateOptions() {
  if (options_.container != "mpegts" && options_.container != "mp4") {
    return absl::InvalidArgumentError(
        absl::StrCat("container: must be \"mpegts\" or \"mp4\"; got \"", options_.container, "\""));
  }
  if (ladder_.empty()) return absl::InvalidArgumentError("renditions: the ladder is empty");
  if (ladder_.size() > static_cast<size_t>(std::max(options_.max_renditions, 0))) {
    return absl::InvalidArgumentError(absl::StrCat("renditions: ", ladder_.size(),
                                                   " renditions, more than the limit of ",
                                                   options_.max_renditions));
  }
  for (size_t i = 0; i < ladder_.size(); ++i) {
    auto r = std::make_unique<Rendition>();
    r->index = i;
    r->spec = ladder_[i];
    if (auto status = ValidateSpec(i, options_, r->spec); !status.ok()) return status;
    renditions_.push_back(std::move(r));
  }
  if (segment_.empty()) return absl::InvalidArgumentError("segment: input is empty");
  // Size and video duration, before the input is opened for decoding.
  if (auto status =
          CheckSegmentLimits(segment_, options_.max_input_bytes, options_.max_input_seconds,
                             kInputFormats, options_.max_input_frames * 16 + 1024, "segment");
      !status.ok()) {
    return status;
  }
  options_.encoder_threads = std::clamp(options_.encoder_threads, 0, 16);  // 0: libx264 decides
  if (options_.hw_decode.empty()) options_.hw_decode = "auto";
  if (options_.hw_decode != "auto" && options_.hw_decode != "cuda" &&
      options_.hw_decode != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hw_decode: must be \"auto\", \"cuda\" or \"none\"; got \"", options_.hw_decode, "\""));
  }
  if (options_.hw_decode == "cuda" && media::SharedCudaDevice() == nullptr) {
    return absl::FailedPreconditionError(
        "hw_decode: \"cuda\" asked for, but this machine has no CUDA device FFmpeg can open");
  }
  if (options_.hw_encode.empty()) options_.hw_encode = "auto";
  if (options_.hw_encode != "auto" && options_.hw_encode != "nvenc" &&
      options_.hw_encode != "none") {
    return absl::InvalidArgumentError(absl::StrCat(
        "hw_encode: must be \"auto\", \"nvenc\" or \"none\"; got \"", options_.hw_encode, "\""));
  }
  if (options_.hw_encode == "nvenc" && !media::ProbeVideoHardware().nvenc_h264) {
    return absl::FailedPreconditionError(absl::StrCat(
        "hw_encode: \"nvenc\" asked for, but this machine has no NVENC encoder that opens (",
        media::ProbeVideoHardware().detail, ")"));
  }
  if (options_.audio_codec.empty()) options_.audio_codec = "copy";
  if (options_.audio_codec != "copy" && options_.audio_codec != "aac") {
    return absl::InvalidArgumentError(absl::StrCat(
        "audio_codec: must be \"copy\" or \"aac\"; got \"", options_.audio_codec, "\""));
  }
  if (options_.audio_codec == "aac" &&
      (options_.audio_bitrate_bps < media::AacEncoder::kMinBitrate ||
       options_.audio_bitrate_bps > media::AacEncoder::kMaxBitrate)) {
    return absl::InvalidArgumentError(
        absl::StrCat("audio_bitrate_bps: ", options_.audio_bitrate_bps, " is outside ",
                     media::AacEncoder::kMinBitrate, "..", media::AacEncoder::kMaxBitrate));
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::OpenInput() {
  auto demuxer = media::OpenMemoryDemuxer(segment_, kInputFormats);
  if (!demuxer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("segment: ", demuxer.status().message()));
  }
  demuxer_ = std::move(*demuxer);
  AVFormatContext* fmt = demuxer_->format.get();

  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    AVStream* st = fmt->streams[i];
    if (video_ == nullptr && st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
        (st->disposition & AV_DISPOSITION_ATTACHED_PIC) == 0) {
      video_ = st;
    }
  }
  if (video_ == nullptr) {
    if (!how_.allow_audio_only) {
      return absl::InvalidArgumentError("segment: input has no video stream");
    }
    audio_only_ = true;
  } else if (auto status = OpenVideo(); !status.ok()) {
    return status;
  }
  if (auto status = CheckTruncation(); !status.ok()) return status;

  // Audio streams copied into every rendition; everything else is discarded while demuxing.
  copy_audio_.assign(fmt->nb_streams, false);
  int audio_streams = 0;
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    AVStream* st = fmt->streams[i];
    const AVCodecParameters* p = st->codecpar;
    const bool copy =
        p->codec_type == AVMEDIA_TYPE_AUDIO && audio_streams < kMaxAudioStreams &&
        p->codec_id != AV_CODEC_ID_NONE && p->sample_rate > 0 && p->ch_layout.nb_channels > 0 &&
        (options_.audio_codec == "aac" ? avcodec_find_decoder(p->codec_id) != nullptr
                                       : AudioFitsContainer(p->codec_id, options_.container));
    if (copy) {
      copy_audio_[i] = true;
      ++audio_streams;
    } else if (st != video_) {
      st->discard = AVDISCARD_ALL;
    }
  }
  if (audio_only_ && audio_streams == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: input has no video stream and no audio stream that can be copied "
                     "into ",
                     options_.container));
  }

  frame_.reset(av_frame_alloc());
  packet_.reset(av_packet_alloc());
  out_packet_.reset(av_packet_alloc());
  for (auto& r : renditions_) r->out_packet.reset(av_packet_alloc());
  for (auto& r : renditions_) {
    if (!r->out_packet) return absl::ResourceExhaustedError("cannot allocate a packet");
  }
  if (!frame_ || !packet_ || !out_packet_) {
    return absl::ResourceExhaustedError("cannot allocate frames or packets");
  }
  return absl::OkStatus();
}

// Decoders are reused while these match (TS and MP4 carry H.264 differently: extradata differs).
bool SameCodecParameters(const AVCodecParameters* a, const AVCodecParameters* b) {
  return a->codec_id == b->codec_id && a->width == b->width && a->height == b->height &&
         a->format == b->format && a->profile == b->profile && a->level == b->level &&
         a->bits_per_raw_sample == b->bits_per_raw_sample &&
         a->extradata_size == b->extradata_size &&
         (a->extradata_size == 0 ||
          std::memcmp(a->extradata, b->extradata, static_cast<size_t>(a->extradata_size)) == 0);
}

absl::Status SegmentTranscoder::OpenVideo() {
  AVFormatContext* fmt = demuxer_->format.get();
  const AVCodecParameters* par = video_->codecpar;
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);
  if (codec == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment: video codec \"", avcodec_get_name(par->codec_id), "\" cannot be decoded"));
  }
  if (par->width <= 0 || par->height <= 0) {
    // The sequence header (and so the frame size) usually comes with a keyframe: say so when
    // there is none.
    if (!HasVideoKeyframe()) {
      return absl::InvalidArgumentError(
          "segment: no keyframe in the video: a segment must contain an IDR frame (with its "
          "sequence header); was it cut mid-GOP?");
    }
    return absl::InvalidArgumentError(
        "segment: the video stream has no frame size (truncated or corrupt input?)");
  }
  if (par->width > options_.max_width || par->height > options_.max_height) {
    return absl::InvalidArgumentError(absl::StrCat("segment: input video is ", par->width, "x",
                                                   par->height, ", larger than the limit of ",
                                                   options_.max_width, "x", options_.max_height));
  }
  AVRational sar = av_guess_sample_aspect_ratio(fmt, video_, nullptr);
  if (sar.num <= 0 || sar.den <= 0) sar = AVRational{1, 1};
  av_reduce(&display_aspect_.num, &display_aspect_.den, int64_t{par->width} * sar.num,
            int64_t{par->height} * sar.den, INT_MAX);
  input_rate_ = av_guess_frame_rate(fmt, video_, nullptr);
  if (input_rate_.num <= 0 || input_rate_.den <= 0 || av_q2d(input_rate_) > 1000 ||
      av_q2d(input_rate_) < 0.1) {
    input_rate_ = AVRational{25, 1};
  }

  // A stream's decoder is kept while its parameters stay the same: flushed (it was drained at the
  // end of the previous segment, or left mid-way by a failed one) and pointed at this segment's
  // time base.
  if (state_ != nullptr && state_->decoder && state_->decoder_params &&
      SameCodecParameters(state_->decoder_params.get(), par)) {
    dec_ = state_->decoder.get();
    avcodec_flush_buffers(dec_);
    dec_->pkt_timebase = video_->time_base;
    return absl::OkStatus();
  }
  AvCodecContextPtr decoder(avcodec_alloc_context3(codec));
  if (!decoder) return absl::ResourceExhaustedError("cannot allocate a decoder");
  int ret = avcodec_parameters_to_context(decoder.get(), par);
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: bad video codec parameters: ", AvErrorString(ret)));
  }
  decoder->pkt_timebase = video_->time_base;
  decoder->thread_count = 1;
  decoder->max_pixels = int64_t{options_.max_width} * options_.max_height;
  const bool want_gpu = options_.hw_decode != "none" && CudaDecodes(codec);
  if (want_gpu) {
    decoder->hw_device_ctx = av_buffer_ref(media::SharedCudaDevice());
    if (decoder->hw_device_ctx == nullptr) return absl::ResourceExhaustedError("out of memory");
    decoder->get_format = PickCudaFormat;
    // Scaling on the GPU, renditions hold references to decoded surfaces (their queues, the fps
    // converter's pending frame): room in the pool for them beyond the decoder's own.
    decoder->extra_hw_frames = static_cast<int>(renditions_.size()) * 6 + 2;
  } else if (options_.hw_decode == "cuda") {
    return absl::FailedPreconditionError(absl::StrCat("hw_decode: \"cuda\" asked for, but ",
                                                      codec->name, " cannot decode on CUDA here"));
  }
  ret = avcodec_open2(decoder.get(), codec, nullptr);
  if (ret < 0 && want_gpu && options_.hw_decode == "auto") {
    // The GPU would not take this stream: decode it in software instead.
    decoder.reset(avcodec_alloc_context3(codec));
    if (!decoder) return absl::ResourceExhaustedError("cannot allocate a decoder");
    if (avcodec_parameters_to_context(decoder.get(), par) < 0) {
      return absl::InvalidArgumentError("segment: bad video codec parameters");
    }
    decoder->pkt_timebase = video_->time_base;
    decoder->thread_count = 1;
    decoder->max_pixels = int64_t{options_.max_width} * options_.max_height;
    ret = avcodec_open2(decoder.get(), codec, nullptr);
  }
  if (ret < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: cannot open the video decoder: ", AvErrorString(ret)));
  }
  dec_ = decoder.get();
  if (state_ == nullptr) {
    decoder_ = std::move(decoder);
    return absl::OkStatus();
  }
  AvCodecParametersPtr params(avcodec_parameters_alloc());
  if (!params || avcodec_parameters_copy(params.get(), par) < 0) {
    return absl::ResourceExhaustedError("cannot copy the video codec parameters");
  }
  state_->decoder = std::move(decoder);
  state_->decoder_params = std::move(params);
  ++state_->stats.decoders_opened;
  return absl::OkStatus();
}

// Whether any video packet of the segment is flagged as a keyframe (a second pass over the input;
// only used to explain a failure).
bool SegmentTranscoder::HasVideoKeyframe() {
  auto scan = media::OpenMemoryDemuxer(segment_, kInputFormats);
  if (!scan.ok()) return false;
  AVFormatContext* fmt = (*scan)->format.get();
  AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return false;
  const int64_t max_packets = options_.max_input_frames * 16 + 1024;
  for (int64_t n = 0; n < max_packets && av_read_frame(fmt, pkt.get()) >= 0; ++n) {
    const bool key = pkt->stream_index == video_->index && (pkt->flags & AV_PKT_FLAG_KEY) != 0;
    av_packet_unref(pkt.get());
    if (key) return true;
  }
  return false;
}

// A truncated MP4 has samples indexed past the end of the data; a truncated MPEG-TS does not end
// on a whole transport packet. (A TS cut exactly at a packet boundary looks like a shorter
// segment and is accepted.)
absl::Status SegmentTranscoder::CheckTruncation() {
  AVFormatContext* fmt = demuxer_->format.get();
  const auto size = static_cast<int64_t>(segment_.size());
  for (unsigned s = 0; s < fmt->nb_streams; ++s) {
    AVStream* st = fmt->streams[s];
    // The video stream; or, for an audio-only segment, every audio stream.
    if (video_ != nullptr ? st != video_ : st->codecpar->codec_type != AVMEDIA_TYPE_AUDIO) continue;
    const int entries = avformat_index_get_entries_count(st);
    for (int i = 0; i < entries; ++i) {
      const AVIndexEntry* e = avformat_index_get_entry(st, i);
      if (e != nullptr && e->size > 0 && e->pos + e->size > size) {
        return absl::InvalidArgumentError(
            absl::StrCat("segment: input is truncated: ", video_ != nullptr ? "video" : "audio",
                         " sample ", i, " at byte ", e->pos, " (", e->size,
                         " bytes) extends past the end of the data (", size, " bytes)"));
      }
    }
  }
  if (std::string_view(fmt->iformat->name) == "mpegts") {
    int64_t packet_size = 0;
    if (av_opt_get_int(fmt, "ts_packetsize", AV_OPT_SEARCH_CHILDREN, &packet_size) >= 0 &&
        (packet_size == 188 || packet_size == 192 || packet_size == 204)) {
      const int64_t sync = size - packet_size + (packet_size == 192 ? 4 : 0);
      if (sync < 0 || segment_[sync] != 0x47) {
        return absl::InvalidArgumentError(
            absl::StrCat("segment: input is truncated: the data does not end on a whole ",
                         packet_size, "-byte transport stream packet"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::PrepareAudioFilters() {
  AVFormatContext* fmt = demuxer_->format.get();
  audio_filters_.clear();
  audio_filters_.resize(fmt->nb_streams);
  audio_configs_.assign(fmt->nb_streams, std::string());
  if (options_.container != "mp4" || options_.audio_codec == "aac") return absl::OkStatus();
  int needed = 0;
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    const AVCodecParameters* par = fmt->streams[i]->codecpar;
    if (!copy_audio_[i] || par->codec_id != AV_CODEC_ID_AAC || par->extradata_size > 0) continue;
    const AVBitStreamFilter* filter = av_bsf_get_by_name("aac_adtstoasc");
    AVBSFContext* raw = nullptr;
    if (filter == nullptr || av_bsf_alloc(filter, &raw) < 0) {
      return absl::InternalError("cannot create the aac_adtstoasc filter");
    }
    AvBsfContextPtr bsf(raw);
    if (avcodec_parameters_copy(bsf->par_in, par) < 0) {
      return absl::ResourceExhaustedError("cannot copy audio parameters");
    }
    bsf->time_base_in = fmt->streams[i]->time_base;
    if (av_bsf_init(bsf.get()) < 0) {
      copy_audio_[i] = false;  // cannot be carried into MP4: leave it out
      continue;
    }
    audio_filters_[i] = std::move(bsf);
    ++needed;
  }
  if (needed == 0) return absl::OkStatus();

  // The AudioSpecificConfig comes from the first ADTS header, and the MP4 header (written before
  // any packet) needs it: find each stream's first packet with a second pass over the input.
  auto scan = media::OpenMemoryDemuxer(segment_, kInputFormats);
  if (!scan.ok())
    return absl::InvalidArgumentError(absl::StrCat("segment: ", scan.status().message()));
  AVFormatContext* scan_fmt = (*scan)->format.get();
  AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return absl::ResourceExhaustedError("cannot allocate a packet");
  const int64_t max_packets = options_.max_input_frames * 16 + 1024;
  for (int64_t n = 0; needed > 0 && n < max_packets; ++n) {
    if (Cancelled()) return absl::CancelledError("transcode cancelled");
    if (av_read_frame(scan_fmt, pkt.get()) < 0) break;
    const int index = pkt->stream_index;
    if (index >= 0 && static_cast<size_t>(index) < audio_filters_.size() && audio_filters_[index] &&
        audio_configs_[index].empty()) {
      // The filter hands the config out as new-extradata side data on its first packet.
      AVBSFContext* bsf = audio_filters_[index].get();
      if (av_bsf_send_packet(bsf, pkt.get()) >= 0) {
        while (av_bsf_receive_packet(bsf, pkt.get()) >= 0) {
          size_t size = 0;
          const uint8_t* data =
              av_packet_get_side_data(pkt.get(), AV_PKT_DATA_NEW_EXTRADATA, &size);
          if (data != nullptr && size > 0 && audio_configs_[index].empty()) {
            audio_configs_[index].assign(reinterpret_cast<const char*>(data), size);
            --needed;
          }
          av_packet_unref(pkt.get());
        }
      }
      av_bsf_flush(bsf);
    }
    av_packet_unref(pkt.get());
  }
  for (size_t i = 0; i < audio_filters_.size(); ++i) {
    if (audio_filters_[i] && audio_configs_[i].empty()) {
      audio_filters_[i].reset();  // no usable ADTS header: leave this stream out
      copy_audio_[i] = false;
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::SetUpRendition(Rendition& r) {
  if (state_ != nullptr) {
    if (state_->scalers.size() < ladder_.size()) state_->scalers.resize(ladder_.size());
    r.scaler = &state_->scalers[r.index];
    if (how_.continues_previous && r.index < state_->last_pts.size() &&
        state_->last_pts[r.index] != AV_NOPTS_VALUE) {
      r.floor_pts = state_->last_pts[r.index];
      r.floor_time_base = state_->last_time_base[r.index];
    }
  }
  if (audio_only_) {
    // Sizes as resolved by the stream's last video segment; no encoder, no video stream.
    if (state_ != nullptr && r.index < state_->resolved.size()) r.spec = state_->resolved[r.index];
    return OpenMuxer(r);
  }
  RenditionSpec& spec = r.spec;
  const double aspect = av_q2d(display_aspect_);
  const AVCodecParameters* par = video_->codecpar;
  if (spec.width == 0 && spec.height == 0) {
    r.width = RoundEven(par->height * aspect);
    r.height = RoundEven(par->height);
  } else if (spec.width == 0) {
    r.width = RoundEven(spec.height * aspect);
    r.height = spec.height;
  } else if (spec.height == 0) {
    r.width = spec.width;
    r.height = RoundEven(spec.width / aspect);
  } else {
    r.width = spec.width;
    r.height = spec.height;
  }
  if (r.width > options_.max_width || r.height > options_.max_height) {
    return Invalid(r.index, spec.width == 0 ? "width" : "height",
                   absl::StrCat("the output would be ", r.width, "x", r.height,
                                " to keep the input's aspect ratio, larger than the limit of ",
                                options_.max_width, "x", options_.max_height));
  }
  spec.width = r.width;
  spec.height = r.height;
  if (spec.name.empty()) spec.name = absl::StrCat(r.height, "p");

  r.passthrough_rate = spec.fps_num == 0;
  if (r.passthrough_rate) {
    r.rate = input_rate_;
    r.time_base = video_->time_base;
  } else {
    av_reduce(&r.rate.num, &r.rate.den, spec.fps_num, spec.fps_den, INT_MAX);
    r.time_base = av_inv_q(r.rate);
    r.max_fill_slots =
        std::max<int64_t>(1, static_cast<int64_t>(std::ceil(kMaxFillSeconds * av_q2d(r.rate))));
  }
  if (r.floor_pts != AV_NOPTS_VALUE) {
    // Nothing at or before the previous segment's last frame.
    r.last_pts = av_rescale_q_rnd(r.floor_pts, r.floor_time_base, r.time_base,
                                  static_cast<AVRounding>(AV_ROUND_DOWN));
  }
  if (auto status = OpenEncoder(r); !status.ok()) return status;
  return OpenMuxer(r);
}

bool SegmentTranscoder::ScalesOnGpu(const AVFrame* frame) const {
  if (!options_.gpu_scale || frame->hw_frames_ctx == nullptr) return false;
  const auto* frames = reinterpret_cast<const AVHWFramesContext*>(frame->hw_frames_ctx->data);
  return (frames->sw_format == AV_PIX_FMT_NV12 || frames->sw_format == AV_PIX_FMT_YUV420P) &&
         frame->color_range != AVCOL_RANGE_JPEG;
}

absl::Status SegmentTranscoder::OpenEncoder(Rendition& r) {
  if (options_.hw_encode != "none" && media::ProbeVideoHardware().nvenc_h264) {
    absl::Status nvenc = OpenEncoderWith(r, "h264_nvenc");
    if (nvenc.ok()) {
      hardware_encoded_ = true;
      return nvenc;
    }
    if (options_.hw_encode == "nvenc") return nvenc;
    // "auto": e.g. the GPU's concurrent NVENC sessions are all taken; libx264 does the job.
    spdlog::warn("{}; encoding this rendition with libx264", std::string(nvenc.message()));
  }
  return OpenEncoderWith(r, "libx264");
}

absl::Status SegmentTranscoder::OpenEncoderWith(Rendition& r, const char* encoder_name) {
  const bool nvenc = std::string_view(encoder_name) == "h264_nvenc";
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder_name);
  if (codec == nullptr) {
    return absl::InternalError(absl::StrCat("the ", encoder_name, " encoder is not available"));
  }
  r.encoder.reset(avcodec_alloc_context3(codec));
  AVCodecContext* enc = r.encoder.get();
  if (enc == nullptr) return absl::ResourceExhaustedError("cannot allocate an encoder");
  enc->width = r.width;
  enc->height = r.height;
  enc->pix_fmt = AV_PIX_FMT_YUV420P;
  enc->sample_aspect_ratio = AVRational{1, 1};
  enc->time_base = r.time_base;
  enc->framerate = r.rate;
  enc->bit_rate = r.spec.bitrate_bps;
  enc->rc_max_rate = r.spec.bitrate_bps * 3 / 2;
  enc->rc_buffer_size = static_cast<int>(std::min<int64_t>(r.spec.bitrate_bps * 2, INT_MAX));
  enc->gop_size = std::max(1, static_cast<int>(std::lround(r.spec.gop_seconds * av_q2d(r.rate))));
  if (r.spec.intra_only) {
    enc->gop_size = 1;
    enc->max_b_frames = 0;
  }
  enc->thread_count = options_.encoder_threads;
  enc->color_range = AVCOL_RANGE_MPEG;
  const AVCodecParameters* par = video_->codecpar;
  enc->colorspace = par->color_space;
  enc->color_primaries = par->color_primaries;
  enc->color_trc = par->color_trc;
  if (options_.container == "mp4") {
    enc->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;  // mp4 keeps SPS/PPS in the sample description
  }
  AVDictionary* opts = nullptr;
  av_dict_set(&opts, "profile", r.spec.profile.c_str(), 0);
  av_dict_set(&opts, "forced-idr", "1", 0);
  if (nvenc) {
    // NOT RUN on a GPU with NVENC by our tests (none was available); the software path is the
    // tested one. Same contract: IDR first, keyframes exactly every gop frames, no scene cuts.
    av_dict_set(&opts, "preset", NvencPreset(r.spec.preset), 0);
    av_dict_set(&opts, "rc", "vbr", 0);
    av_dict_set(&opts, "no-scenecut", "1", 0);
    av_dict_set(&opts, "strict_gop", "1", 0);
    if (r.spec.intra_only) enc->gop_size = 0;  // h264_nvenc: 0 is intra-only, every frame IDR
    enc->thread_count = 0;
  } else {
    av_dict_set(&opts, "preset", r.spec.preset.c_str(), 0);
    // Keyframes exactly every gop frames, so renditions stay aligned.
    av_dict_set(&opts, "x264-params",
                r.spec.intra_only ? "scenecut=0:keyint=1:bframes=0" : "scenecut=0", 0);
  }
  const int ret = avcodec_open2(enc, codec, &opts);
  av_dict_free(&opts);
  if (ret < 0) {
    r.encoder.reset();
    return absl::InternalError(absl::StrCat("rendition ", r.index, ": cannot open ", encoder_name,
                                            ": ", AvErrorString(ret)));
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::OpenMuxer(Rendition& r) {
  auto muxer = media::OpenMemoryMuxer(options_.container, &r.data);
  if (!muxer.ok()) return absl::InternalError(muxer.status().message());
  r.muxer = std::move(*muxer);
  AVFormatContext* out = r.muxer->format.get();

  int ret = 0;
  if (!audio_only_) {
    r.video_stream = avformat_new_stream(out, nullptr);
    if (r.video_stream == nullptr) return absl::ResourceExhaustedError("cannot add a stream");
    ret = avcodec_parameters_from_context(r.video_stream->codecpar, r.encoder.get());
    if (ret < 0) return absl::InternalError("cannot set the output video parameters");
    r.video_stream->time_base = r.encoder->time_base;
    r.video_stream->avg_frame_rate = r.rate;
  }

  AVFormatContext* in = demuxer_->format.get();
  r.audio_map.assign(in->nb_streams, -1);
  for (unsigned i = 0; i < in->nb_streams; ++i) {
    if (!copy_audio_[i]) continue;
    AVStream* st = avformat_new_stream(out, nullptr);
    if (st == nullptr) return absl::ResourceExhaustedError("cannot add a stream");
    if (i < audio_encoders_.size() && audio_encoders_[i]) {
      ret = avcodec_parameters_from_context(st->codecpar, audio_encoders_[i]->encoder());
      if (ret < 0) return absl::InternalError("cannot set the output audio parameters");
      st->time_base = audio_encoders_[i]->time_base();
      r.audio_map[i] = st->index;
      continue;
    }
    ret = avcodec_parameters_copy(
        st->codecpar, audio_filters_[i] ? audio_filters_[i]->par_out : in->streams[i]->codecpar);
    if (ret < 0) return absl::InternalError("cannot copy the audio parameters");
    st->codecpar->codec_tag = 0;
    if (!audio_configs_[i].empty()) {
      const std::string& config = audio_configs_[i];
      av_freep(&st->codecpar->extradata);
      st->codecpar->extradata_size = 0;
      st->codecpar->extradata =
          static_cast<uint8_t*>(av_mallocz(config.size() + AV_INPUT_BUFFER_PADDING_SIZE));
      if (st->codecpar->extradata == nullptr) return absl::ResourceExhaustedError("out of memory");
      std::memcpy(st->codecpar->extradata, config.data(), config.size());
      st->codecpar->extradata_size = static_cast<int>(config.size());
    }
    st->time_base = in->streams[i]->time_base;
    r.audio_map[i] = st->index;
  }
  r.last_audio_dts.assign(out->nb_streams, AV_NOPTS_VALUE);

  AVDictionary* opts = nullptr;
  if (options_.container == "mp4") {
    // frag_discont + no edit list: each fragment's tfdt carries the input's timestamps instead of
    // restarting at zero, so consecutive segments continue each other.
    av_dict_set(&opts, "movflags", "frag_keyframe+empty_moov+default_base_moof+frag_discont", 0);
    av_dict_set(&opts, "use_editlist", "0", 0);
    out->avoid_negative_ts = AVFMT_AVOID_NEG_TS_MAKE_NON_NEGATIVE;
  }
  ret = avformat_write_header(out, &opts);
  av_dict_free(&opts);
  if (ret < 0) {
    r.muxer.reset();
    r.data.clear();
    return MuxError(r.index, "writing the container header", ret);
  }
  // A session's segment following the previous one: its audio starts after that one's did end
  // (the stream time bases are only final now).
  r.audio_floor.assign(out->nb_streams, false);
  r.muxer_audio_time_bases.assign(out->nb_streams, AVRational{0, 0});
  for (unsigned i = 0; i < out->nb_streams; ++i) {
    if (out->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      r.muxer_audio_time_bases[i] = out->streams[i]->time_base;
    }
  }
  if (state_ != nullptr && how_.continues_previous && r.index < state_->last_audio_seconds.size()) {
    const std::vector<double>& last = state_->last_audio_seconds[r.index];
    size_t k = 0;
    for (unsigned i = 0; i < out->nb_streams; ++i) {
      const AVStream* st = out->streams[i];
      if (st->codecpar->codec_type != AVMEDIA_TYPE_AUDIO) continue;
      if (k < last.size() && std::isfinite(last[k])) {
        r.last_audio_dts[i] = static_cast<int64_t>(std::floor(last[k] / av_q2d(st->time_base)));
        r.audio_floor[i] = true;
      }
      ++k;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<AvFramePtr> SegmentTranscoder::ScaleOnGpu(Rendition& r, AVFrame* src) {
  internal::Scaler& sc = *r.scaler;
  const void* pool = src->hw_frames_ctx != nullptr ? src->hw_frames_ctx->data : nullptr;
  if (!sc.gpu_failed && (!sc.gpu || !sc.gpu->Accepts(src) || sc.gpu_frames_ctx != pool ||
                         sc.gpu->out_width() != r.width || sc.gpu->out_height() != r.height)) {
    sc.gpu.reset();
    auto made = media::FilterScaler::Create({.width = src->width,
                                             .height = src->height,
                                             .format = src->format,
                                             .hw_frames_ctx = src->hw_frames_ctx},
                                            r.width, r.height);
    if (made.ok()) {
      sc.gpu = std::move(*made);
      sc.gpu_frames_ctx = pool;
      ++r.scalers_created;
    } else {
      // E.g. an FFmpeg built without CUDA filters: the frames go through memory instead.
      spdlog::warn("rendition {}: no GPU scaling ({}); scaling on the CPU", r.index,
                   std::string(made.status().message()));
      sc.gpu_failed = true;
    }
  }
  if (sc.gpu) return sc.gpu->Scale(src);
  AvFramePtr memory(av_frame_alloc());
  if (!memory) return absl::ResourceExhaustedError("cannot allocate a frame");
  if (int err = av_hwframe_transfer_data(memory.get(), src, 0); err < 0) {
    return absl::InternalError(
        absl::StrCat("copying a GPU-decoded frame to memory failed: ", AvErrorString(err)));
  }
  av_frame_copy_props(memory.get(), src);
  return Scale(r, memory.get());
}

absl::StatusOr<AvFramePtr> SegmentTranscoder::Scale(Rendition& r, AVFrame* src) {
  if (src->format == AV_PIX_FMT_CUDA) return ScaleOnGpu(r, src);
  const auto src_format = static_cast<AVPixelFormat>(src->format);
  const bool full_range = src->color_range == AVCOL_RANGE_JPEG || IsFullRange(src_format);
  if (src->width == r.width && src->height == r.height && src_format == AV_PIX_FMT_YUV420P &&
      !full_range) {
    AvFramePtr out(av_frame_clone(src));  // a new reference to the same pixels
    if (!out) return absl::ResourceExhaustedError("cannot reference a frame");
    return out;
  }
  internal::Scaler& sc = *r.scaler;
  if (!sc.sws || sc.src_width != src->width || sc.src_height != src->height ||
      sc.src_format != src->format || sc.colorspace != src->colorspace ||
      sc.range != static_cast<int>(full_range) || sc.dst_width != r.width ||
      sc.dst_height != r.height) {
    const AVPixelFormat fmt = UnJ(src_format);
    if (sws_isSupportedInput(fmt) <= 0) {
      const char* name = av_get_pix_fmt_name(fmt);
      return absl::InvalidArgumentError(absl::StrCat("segment: unsupported decoded pixel format ",
                                                     name != nullptr ? name : "unknown"));
    }
    sc.sws.reset(sws_getContext(src->width, src->height, fmt, r.width, r.height, AV_PIX_FMT_YUV420P,
                                SWS_BICUBIC, nullptr, nullptr, nullptr));
    if (!sc.sws) return absl::InternalError("cannot create a scaler");
    ++r.scalers_created;
    int cs = SWS_CS_DEFAULT;
    if (src->colorspace == AVCOL_SPC_BT709) cs = SWS_CS_ITU709;
    if (src->colorspace == AVCOL_SPC_BT2020_NCL || src->colorspace == AVCOL_SPC_BT2020_CL) {
      cs = SWS_CS_BT2020;
    }
    const int* coeffs = sws_getCoefficients(cs);
    sws_setColorspaceDetails(sc.sws.get(), coeffs, full_range ? 1 : 0, coeffs, 0, 0, 1 << 16,
                             1 << 16);
    sc.src_width = src->width;
    sc.src_height = src->height;
    sc.src_format = src->format;
    sc.colorspace = src->colorspace;
    sc.range = static_cast<int>(full_range);
    sc.dst_width = r.width;
    sc.dst_height = r.height;
  }
  AvFramePtr out(av_frame_alloc());
  if (!out) return absl::ResourceExhaustedError("cannot allocate a frame");
  out->format = AV_PIX_FMT_YUV420P;
  out->width = r.width;
  out->height = r.height;
  if (av_frame_get_buffer(out.get(), 0) < 0) {
    return absl::ResourceExhaustedError("cannot allocate a scaled frame");
  }
  av_frame_copy_props(out.get(), src);
  out->color_range = AVCOL_RANGE_MPEG;
  out->sample_aspect_ratio = AVRational{1, 1};
  const int ret =
      sws_scale(sc.sws.get(), src->data, src->linesize, 0, src->height, out->data, out->linesize);
  if (ret < 0) return absl::InternalError(absl::StrCat("scaling failed: ", AvErrorString(ret)));
  return out;
}

absl::Status SegmentTranscoder::Encode(Rendition& r, AVFrame* frame) {
  AVCodecContext* enc = r.encoder.get();
  int ret = avcodec_send_frame(enc, frame);
  if (ret < 0) {
    return absl::InternalError(
        absl::StrCat("rendition ", r.index, ": encoding failed: ", AvErrorString(ret)));
  }
  AVPacket* pkt = r.out_packet.get();
  while (true) {
    ret = avcodec_receive_packet(enc, pkt);
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return absl::OkStatus();
    if (ret < 0) {
      return absl::InternalError(
          absl::StrCat("rendition ", r.index, ": encoding failed: ", AvErrorString(ret)));
    }
    pkt->stream_index = r.video_stream->index;
    av_packet_rescale_ts(pkt, enc->time_base, r.video_stream->time_base);
    // With B-frames the encoder's first DTS come before the first PTS: at a stream starting at 0
    // they are negative, and the muxer would shift this whole output later (but not the next
    // segment's, which would then overlap it). Instead squeeze them in just after 0, a tick
    // apart (the stream time base is at least 1/10000 s, far finer than a frame).
    if (pkt->dts != AV_NOPTS_VALUE) {
      int64_t dts = pkt->dts;
      if (dts < 0 && pkt->pts != AV_NOPTS_VALUE && pkt->pts >= 0) dts = 0;
      if (r.last_dts != AV_NOPTS_VALUE && dts <= r.last_dts) dts = r.last_dts + 1;
      if (pkt->pts != AV_NOPTS_VALUE && dts > pkt->pts) {
        av_packet_unref(pkt);
        return absl::InternalError(
            absl::StrCat("rendition ", r.index, ": the encoder's timestamps cannot be muxed"));
      }
      pkt->dts = dts;
      r.last_dts = dts;
    }
    ret = av_interleaved_write_frame(r.muxer->format.get(), pkt);  // takes the packet's data
    av_packet_unref(pkt);
    if (ret < 0) {
      return MuxError(r.index, "muxing video", ret);
    }
  }
}

absl::Status SegmentTranscoder::Emit(Rendition& r, int64_t pts) {
  // Never at or before the last frame (of this output, or of the previous segment's).
  if (r.last_pts != AV_NOPTS_VALUE && pts <= r.last_pts) return absl::OkStatus();
  if (r.frames >= options_.max_output_frames) {
    return absl::InvalidArgumentError(absl::StrCat(Field(r.index, "fps_num/fps_den"),
                                                   ": the output would have more than ",
                                                   options_.max_output_frames, " frames"));
  }
  if (!r.pending_scaled) {
    auto scaled = Scale(r, r.pending.get());
    if (!scaled.ok()) return scaled.status();
    r.pending_scaled = std::move(*scaled);
  }
  // A fresh reference per output frame: the encoder may hold on to the previous one.
  AvFramePtr out(av_frame_clone(r.pending_scaled.get()));
  if (!out) return absl::ResourceExhaustedError("cannot reference a frame");
  out->pts = pts;
  // The first frame of every output is an IDR; after that libx264 decides (every gop frames).
  out->pict_type = r.frames == 0 ? AV_PICTURE_TYPE_I : AV_PICTURE_TYPE_NONE;
  out->key_frame = r.frames == 0 ? 1 : 0;
  r.last_pts = pts;
  ++r.frames;
  return Encode(r, out.get());
}

absl::Status SegmentTranscoder::Push(Rendition& r, AVFrame* frame, int64_t ts) {
  if (r.passthrough_rate) {
    if (r.last_pts != AV_NOPTS_VALUE && ts <= r.last_pts) return absl::OkStatus();  // not after
    r.pending.reset(av_frame_clone(frame));
    if (!r.pending) return absl::ResourceExhaustedError("cannot reference a frame");
    r.pending_scaled.reset();
    return Emit(r, ts);
  }
  const int64_t slot = av_rescale_q_rnd(ts, video_->time_base, r.time_base,
                                        static_cast<AVRounding>(AV_ROUND_NEAR_INF));
  if (!r.have_pending) {
    r.next_slot = slot;
    r.have_pending = true;
  } else if (slot > r.next_slot) {
    if (slot - r.next_slot > r.max_fill_slots) {
      // A discontinuity: show the previous frame once and carry on at the new time.
      if (auto status = Emit(r, r.next_slot); !status.ok()) return status;
      r.next_slot = slot;
    } else {
      while (r.next_slot < slot) {
        if (Cancelled()) return absl::CancelledError("transcode cancelled");
        if (auto status = Emit(r, r.next_slot++); !status.ok()) return status;
      }
    }
  }
  // Frames landing on an already-filled slot replace the pending one (dropped if superseded).
  r.pending.reset(av_frame_clone(frame));
  if (!r.pending) return absl::ResourceExhaustedError("cannot reference a frame");
  r.pending_scaled.reset();
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::OnFrame(AVFrame* frame) {
  if (Cancelled()) return absl::CancelledError("transcode cancelled");
  if (intra_entry_ && !seen_intra_) {
    if (frame->key_frame == 0 && frame->pict_type != AV_PICTURE_TYPE_I) return absl::OkStatus();
    seen_intra_ = true;
  }
  if (frame->width <= 0 || frame->height <= 0 || frame->width > options_.max_width ||
      frame->height > options_.max_height) {
    return absl::InvalidArgumentError(absl::StrCat("segment: decoded a ", frame->width, "x",
                                                   frame->height, " frame, outside the limit of ",
                                                   options_.max_width, "x", options_.max_height));
  }
  if (++input_frames_ > options_.max_input_frames) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: input has more than ", options_.max_input_frames, " video frames"));
  }
  int64_t duration = frame->pkt_duration;
  if (duration <= 0) duration = av_rescale_q(1, av_inv_q(input_rate_), video_->time_base);
  if (duration <= 0) duration = 1;
  int64_t ts = frame->best_effort_timestamp;
  if (ts == AV_NOPTS_VALUE) {
    ts = last_ts_ == AV_NOPTS_VALUE ? 0 : last_ts_ + last_duration_;
  } else {
    ts += ts_offset_;
    if (last_ts_ != AV_NOPTS_VALUE && ts <= last_ts_) {
      // Presentation time went backwards (a splice, a broken muxer): continue from the previous
      // frame and shift what follows by the same amount, so no frame is lost and the output
      // timestamps keep increasing.
      const int64_t next = last_ts_ + last_duration_;
      ts_offset_ += next - ts;
      ts = next;
    }
  }
  last_ts_ = ts;
  last_duration_ = duration;
  const bool first_frame = first_ts_ == AV_NOPTS_VALUE;
  const double seconds = ts * av_q2d(video_->time_base);
  if (first_ts_ == AV_NOPTS_VALUE || ts < first_ts_) first_ts_ = ts;
  if (end_ts_ == AV_NOPTS_VALUE || ts + duration > end_ts_) end_ts_ = ts + duration;

  for (auto& r : renditions_) {
    RenditionWork work;
    work.kind = RenditionWork::Kind::kFrame;
    work.ts = ts;
    // A session's segment that starts well before the previous one ended is a discontinuity (the
    // sender restarted), not an overlap: its frames are all kept, on their own timestamps.
    work.lift_floor = first_frame && r->floor_pts != AV_NOPTS_VALUE &&
                      seconds < r->floor_pts * av_q2d(r->floor_time_base) - kMaxOverlapSeconds;
    if (r->worker) {
      work.frame.reset(av_frame_clone(frame));
      if (!work.frame) return absl::ResourceExhaustedError("cannot reference a frame");
    }
    if (auto status = r->worker ? Dispatch(*r, std::move(work)) : [&] {
          if (work.lift_floor && r->frames == 0) r->last_pts = AV_NOPTS_VALUE;
          return Push(*r, frame, ts);
        }();
        !status.ok()) {
      return status;
    }
  }
  return absl::OkStatus();
}

void SegmentTranscoder::StartWorkers() {
  if (!options_.parallel_renditions || audio_only_ || renditions_.size() < 2) return;
  for (auto& r : renditions_) {
    r->worker = std::make_unique<RenditionWorker>(
        [this, rendition = r.get()](RenditionWork& work) { return DoWork(*rendition, work); },
        &worker_failed_);
  }
}

absl::Status SegmentTranscoder::Dispatch(Rendition& r, RenditionWork work) {
  if (!r.worker) return DoWork(r, work);
  if (!r.worker->Post(std::move(work))) return r.worker->Drain();
  if (worker_failed_.load()) {
    // Another rendition failed: stop feeding this segment; its error is reported by FinishAll's
    // caller through Drain.
    for (auto& other : renditions_) {
      if (other->worker) {
        if (absl::Status status = other->worker->Drain(); !status.ok()) return status;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::DoWork(Rendition& r, RenditionWork& work) {
  switch (work.kind) {
    case RenditionWork::Kind::kFrame:
      if (work.lift_floor && r.frames == 0) r.last_pts = AV_NOPTS_VALUE;
      return Push(r, work.frame.get(), work.ts);
    case RenditionWork::Kind::kAudio:
      return WriteAudioTo(r, work.packet.get(), work.time_base);
    case RenditionWork::Kind::kFinish:
      return Finish(r);
  }
  return absl::InternalError("unknown rendition work");
}

absl::Status SegmentTranscoder::FinishAll() {
  for (auto& r : renditions_) {
    if (!r->worker) continue;
    RenditionWork work;
    work.kind = RenditionWork::Kind::kFinish;
    if (!r->worker->Post(std::move(work))) break;  // failed: its error is returned below
  }
  absl::Status first;
  for (auto& r : renditions_) {
    absl::Status status = r->worker ? r->worker->Drain() : Finish(*r);
    if (first.ok() && !status.ok()) first = std::move(status);
    if (!first.ok() && !r->worker) break;
  }
  return first;
}

absl::Status SegmentTranscoder::Decode(const AVPacket* packet) {
  int ret = avcodec_send_packet(dec_, packet);
  if (ret < 0 && ret != AVERROR_EOF) {
    if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
    ++decode_errors_;  // a corrupt packet: skip it, as players do
    return absl::OkStatus();
  }
  while (true) {
    ret = avcodec_receive_frame(dec_, frame_.get());
    if (ret == AVERROR(EAGAIN) || ret == AVERROR_EOF) return absl::OkStatus();
    if (ret < 0) {
      if (ret == AVERROR(ENOMEM)) return absl::ResourceExhaustedError("out of memory decoding");
      ++decode_errors_;
      // After an error the decoder may still hold frames when flushing; otherwise move on.
      if (packet != nullptr) return absl::OkStatus();
      continue;
    }
    AVFrame* frame = frame_.get();
    if (frame->format == AV_PIX_FMT_CUDA && ScalesOnGpu(frame)) {
      // Decoded on the GPU and scaled there by each rendition (ScaleOnGpu): only the scaled
      // pictures come to memory.
      hardware_decoded_ = true;
    } else if (frame->format == AV_PIX_FMT_CUDA) {
      // Decoded on the GPU: copy to system memory (NV12) for the scalers and libx264.
      if (!gpu_frame_) gpu_frame_.reset(av_frame_alloc());
      if (!gpu_frame_) return absl::ResourceExhaustedError("cannot allocate a frame");
      av_frame_unref(gpu_frame_.get());
      if (int err = av_hwframe_transfer_data(gpu_frame_.get(), frame, 0); err < 0) {
        av_frame_unref(frame);
        return absl::InternalError(
            absl::StrCat("copying a GPU-decoded frame to memory failed: ", AvErrorString(err)));
      }
      av_frame_copy_props(gpu_frame_.get(), frame);
      hardware_decoded_ = true;
      frame = gpu_frame_.get();
    }
    absl::Status status = OnFrame(frame);
    av_frame_unref(frame_.get());
    if (gpu_frame_) av_frame_unref(gpu_frame_.get());
    if (!status.ok()) return status;
  }
}

absl::Status SegmentTranscoder::CopyAudio(AVPacket* packet) {
  const AVStream* in = demuxer_->format->streams[packet->stream_index];
  if (static_cast<size_t>(packet->stream_index) < audio_encoders_.size() &&
      audio_encoders_[packet->stream_index]) {
    media::AacEncoder& encoder = *audio_encoders_[packet->stream_index];
    std::vector<AvPacketPtr> encoded;
    if (auto status = encoder.Encode(packet, &encoded); !status.ok()) return status;
    for (AvPacketPtr& p : encoded) {
      p->stream_index = packet->stream_index;
      if (auto status = WriteAudio(p.get(), encoder.time_base()); !status.ok()) return status;
    }
    return absl::OkStatus();
  }
  AVBSFContext* bsf = audio_filters_[packet->stream_index].get();
  if (bsf == nullptr) return WriteAudio(packet, in->time_base);
  const int index = packet->stream_index;
  if (av_bsf_send_packet(bsf, packet) < 0) {  // takes the packet's data
    av_bsf_flush(bsf);
    return absl::OkStatus();  // a malformed ADTS frame: drop it
  }
  AVPacket* filtered = packet_.get();  // free now: av_bsf_send_packet emptied it
  while (av_bsf_receive_packet(bsf, filtered) >= 0) {
    filtered->stream_index = index;
    absl::Status status = WriteAudio(filtered, in->time_base);
    av_packet_unref(filtered);
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::PrepareAudioEncoders() {
  audio_encoders_.clear();
  if (options_.audio_codec != "aac") return absl::OkStatus();
  AVFormatContext* fmt = demuxer_->format.get();
  audio_encoders_.resize(fmt->nb_streams);
  for (unsigned i = 0; i < fmt->nb_streams; ++i) {
    if (!copy_audio_[i]) continue;
    auto encoder = media::AacEncoder::Create(fmt->streams[i]->codecpar, fmt->streams[i]->time_base,
                                             options_.audio_bitrate_bps);
    if (!encoder.ok()) {
      if (encoder.status().code() != absl::StatusCode::kInvalidArgument) return encoder.status();
      copy_audio_[i] = false;  // undecodable audio: left out, as the copy path leaves out audio
      continue;                // the container cannot carry
    }
    audio_encoders_[i] = *std::move(encoder);
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::FlushAudioEncoders() {
  for (size_t i = 0; i < audio_encoders_.size(); ++i) {
    if (!audio_encoders_[i]) continue;
    std::vector<AvPacketPtr> encoded;
    if (auto status = audio_encoders_[i]->Encode(nullptr, &encoded); !status.ok()) return status;
    for (AvPacketPtr& p : encoded) {
      p->stream_index = static_cast<int>(i);
      if (auto status = WriteAudio(p.get(), audio_encoders_[i]->time_base()); !status.ok()) {
        return status;
      }
    }
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::WriteAudio(AVPacket* packet, AVRational time_base) {
  if (packet->pts == AV_NOPTS_VALUE && packet->dts == AV_NOPTS_VALUE) return absl::OkStatus();
  for (auto& r : renditions_) {
    if (r->audio_map[packet->stream_index] < 0) continue;
    absl::Status status;
    if (r->worker) {
      RenditionWork work;
      work.kind = RenditionWork::Kind::kAudio;
      work.packet.reset(av_packet_clone(packet));
      if (!work.packet) return absl::ResourceExhaustedError("cannot reference a packet");
      work.time_base = time_base;
      status = Dispatch(*r, std::move(work));
    } else {
      status = WriteAudioTo(*r, packet, time_base);
    }
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::WriteAudioTo(Rendition& r, AVPacket* packet, AVRational time_base) {
  const int out_index = r.audio_map[packet->stream_index];
  if (out_index < 0) return absl::OkStatus();
  AVStream* out = r.muxer->format->streams[out_index];
  AVPacket* pkt = r.out_packet.get();
  if (av_packet_ref(pkt, packet) < 0) return absl::ResourceExhaustedError("out of memory");
  if (options_.container == "mpegts" && out->codecpar->codec_id == AV_CODEC_ID_AAC &&
      out->codecpar->extradata_size < 2 &&
      (pkt->size < 7 || pkt->data[0] != 0xFF || (pkt->data[1] & 0xF0) != 0xF0)) {
    av_packet_unref(pkt);  // raw AAC with no config: MPEG-TS cannot carry it
    return absl::OkStatus();
  }
  if (pkt->dts == AV_NOPTS_VALUE) pkt->dts = pkt->pts;
  if (pkt->pts == AV_NOPTS_VALUE) pkt->pts = pkt->dts;
  av_packet_rescale_ts(pkt, time_base, out->time_base);
  int64_t& last = r.last_audio_dts[out_index];
  if (r.audio_floor[out_index]) {
    // The first packet against the previous segment's end: starting well before it is a
    // discontinuity (kept), not an overlap (dropped).
    r.audio_floor[out_index] = false;
    if (last != AV_NOPTS_VALUE &&
        (pkt->dts - last) * av_q2d(out->time_base) < -kMaxOverlapSeconds) {
      last = AV_NOPTS_VALUE;
    }
  }
  if (last != AV_NOPTS_VALUE && pkt->dts <= last) {  // not monotonic or overlapping: drop it
    av_packet_unref(pkt);
    return absl::OkStatus();
  }
  last = pkt->dts;
  pkt->stream_index = out_index;
  pkt->pos = -1;
  const int ret = av_interleaved_write_frame(r.muxer->format.get(), pkt);
  av_packet_unref(pkt);
  if (ret < 0) return MuxError(r.index, "muxing audio", ret);
  return absl::OkStatus();
}

absl::Status SegmentTranscoder::ReadAll() {
  AVFormatContext* fmt = demuxer_->format.get();
  AVPacket* pkt = packet_.get();
  // Every read consumes input, but bound the loop anyway (demuxers can emit empty packets).
  const int64_t max_packets = options_.max_input_frames * 16 + 1024;
  for (int64_t n = 0;; ++n) {
    if (Cancelled()) return absl::CancelledError("transcode cancelled");
    if (n > max_packets) {
      return absl::InvalidArgumentError(
          absl::StrCat("segment: input has more than ", max_packets, " packets"));
    }
    const int ret = av_read_frame(fmt, pkt);
    if (ret == AVERROR_EOF) break;
    if (ret < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "segment: cannot read the input (truncated or corrupt?): ", AvErrorString(ret)));
    }
    absl::Status status;
    if (video_ != nullptr && pkt->stream_index == video_->index) {
      ++video_packets_;
      // Decoding starts at the first keyframe: frames before it (a segment cut mid-GOP) reference
      // pictures that are not in the segment and would decode to garbage.
      // Until one is seen they are kept, in case none is flagged (below).
      if (!seen_keyframe_ && (pkt->flags & AV_PKT_FLAG_KEY) != 0) {
        seen_keyframe_ = true;
        before_keyframe_.clear();
      }
      if (seen_keyframe_) {
        status = Decode(pkt);
      } else {
        AvPacketPtr copy(av_packet_clone(pkt));
        if (!copy) return absl::ResourceExhaustedError("cannot reference a packet");
        before_keyframe_.push_back(std::move(copy));
      }
    } else if (pkt->stream_index >= 0 &&
               static_cast<size_t>(pkt->stream_index) < copy_audio_.size() &&
               copy_audio_[pkt->stream_index]) {
      if (audio_only_ && pkt->pts != AV_NOPTS_VALUE) {
        const double tb = av_q2d(fmt->streams[pkt->stream_index]->time_base);
        const double start = pkt->pts * tb;
        const double end = (pkt->pts + std::max<int64_t>(pkt->duration, 0)) * tb;
        audio_start_ = have_audio_time_ ? std::min(audio_start_, start) : start;
        audio_end_ = have_audio_time_ ? std::max(audio_end_, end) : end;
        have_audio_time_ = true;
      }
      status = CopyAudio(pkt);
    }
    av_packet_unref(pkt);
    if (!status.ok()) return status;
  }
  if (auto status = FlushAudioEncoders(); !status.ok()) return status;
  if (audio_only_) return absl::OkStatus();
  if (!seen_keyframe_ && !before_keyframe_.empty()) {
    // No packet is flagged as a keyframe: demuxers do not flag an I-frame that is neither an IDR
    // nor marked as a recovery point (open-GOP streams). Decode, starting at the first intra
    // frame the decoder finds; a segment without one still fails (below).
    intra_entry_ = true;
    for (AvPacketPtr& p : before_keyframe_) {
      if (auto status = Decode(p.get()); !status.ok()) return status;
      p.reset();
    }
    before_keyframe_.clear();
  }
  return Decode(nullptr);  // flush
}

absl::Status SegmentTranscoder::Finish(Rendition& r) {
  if (!r.passthrough_rate && r.have_pending) {
    // Show the last frame until the end of its duration.
    int64_t end_slot = av_rescale_q_rnd(last_ts_ + last_duration_, video_->time_base, r.time_base,
                                        static_cast<AVRounding>(AV_ROUND_NEAR_INF));
    end_slot = std::min(end_slot, r.next_slot + r.max_fill_slots);
    while (r.next_slot < end_slot) {
      if (Cancelled()) return absl::CancelledError("transcode cancelled");
      if (auto status = Emit(r, r.next_slot++); !status.ok()) return status;
    }
    if (r.frames == 0) {
      if (auto status = Emit(r, r.next_slot++); !status.ok()) return status;
    }
  }
  r.pending.reset();
  r.pending_scaled.reset();
  if (r.encoder) {
    if (auto status = Encode(r, nullptr); !status.ok()) return status;  // flush
  }
  AVFormatContext* out = r.muxer->format.get();
  int ret = av_write_trailer(out);
  if (ret < 0) {
    return absl::InternalError(
        absl::StrCat("rendition ", r.index, ": cannot finish the container: ", AvErrorString(ret)));
  }
  avio_flush(out->pb);
  r.muxer.reset();  // the output is complete in r.data
  return absl::OkStatus();
}

absl::StatusOr<TranscodeResult> SegmentTranscoder::Run() {
  media::InitFfmpeg();
  if (auto status = ValidateOptions(); !status.ok()) return status;
  if (Cancelled()) return absl::CancelledError("transcode cancelled");
  if (auto status = OpenInput(); !status.ok()) return status;
  if (auto status = PrepareAudioFilters(); !status.ok()) return status;
  if (auto status = PrepareAudioEncoders(); !status.ok()) return status;
  bool has_audio = std::find(copy_audio_.begin(), copy_audio_.end(), true) != copy_audio_.end();
  for (auto& r : renditions_) {
    absl::Status status = SetUpRendition(*r);
    if (!status.ok() && has_audio && r->encoder && !r->muxer) {
      // The muxer rejected the copied audio's parameters (a corrupt input): drop the audio from
      // every rendition rather than fail the video.
      std::fill(copy_audio_.begin(), copy_audio_.end(), false);
      has_audio = false;
      for (auto& done : renditions_) {
        if (!done->muxer) continue;
        done->muxer.reset();
        done->data.clear();
        if (status = OpenMuxer(*done); !status.ok()) return status;
      }
      status = OpenMuxer(*r);
    }
    if (!status.ok()) return status;
  }
  StartWorkers();
  if (auto status = ReadAll(); !status.ok()) return status;
  if (audio_only_) return FinishAudioOnly();
  if (video_packets_ == 0) {
    return absl::InvalidArgumentError("segment: the video stream has no packets");
  }
  if (!seen_keyframe_ && input_frames_ == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "segment: no keyframe in the video (", video_packets_,
        " packets, none a keyframe or an intra frame): a segment must contain an IDR or I frame; "
        "was it cut mid-GOP?"));
  }
  if (input_frames_ == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("segment: the video stream decoded to no frames (", decode_errors_,
                     " decode errors; truncated or corrupt input?)"));
  }
  if (auto status = FinishAll(); !status.ok()) return status;

  TranscodeResult result;
  result.input_frames = input_frames_;
  result.hardware_decoded = hardware_decoded_;
  result.hardware_encoded = hardware_encoded_.load();
  result.duration_seconds = std::max<int64_t>(0, end_ts_ - first_ts_) * av_q2d(video_->time_base);
  if (state_ != nullptr) {
    state_->resolved.clear();
    for (auto& r : renditions_) state_->resolved.push_back(r->spec);
  }
  return Collect(std::move(result));
}

absl::StatusOr<TranscodeResult> SegmentTranscoder::FinishAudioOnly() {
  for (auto& r : renditions_) {
    if (auto status = Finish(*r); !status.ok()) return status;
  }
  TranscodeResult result;
  result.duration_seconds = have_audio_time_ ? std::max(0.0, audio_end_ - audio_start_) : 0;
  return Collect(std::move(result));
}

// Moves the outputs into `result` and remembers, for the stream, where each rendition ended.
TranscodeResult SegmentTranscoder::Collect(TranscodeResult result) {
  if (state_ != nullptr) {
    for (auto& r : renditions_) state_->stats.scalers_created += r->scalers_created;
    state_->last_pts.resize(renditions_.size(), AV_NOPTS_VALUE);
    state_->last_time_base.resize(renditions_.size(), AVRational{0, 1});
    state_->last_audio_seconds.resize(renditions_.size());
    for (auto& r : renditions_) {
      if (r->last_pts != AV_NOPTS_VALUE && r->video_stream != nullptr) {
        state_->last_pts[r->index] = r->last_pts;
        state_->last_time_base[r->index] = r->time_base;
      }
      std::vector<double>& audio = state_->last_audio_seconds[r->index];
      audio.clear();
      for (size_t i = 0; i < r->last_audio_dts.size(); ++i) {
        if (r->muxer_audio_time_bases.size() <= i || r->muxer_audio_time_bases[i].den == 0)
          continue;
        audio.push_back(r->last_audio_dts[i] == AV_NOPTS_VALUE
                            ? std::nan("")
                            : r->last_audio_dts[i] * av_q2d(r->muxer_audio_time_bases[i]));
      }
    }
  }
  for (auto& r : renditions_) {
    RenditionOutput out;
    out.spec = r->spec;
    out.data = std::move(r->data);
    out.frames = r->frames;
    out.width = r->width;
    out.height = r->height;
    result.renditions.push_back(std::move(out));
  }
  return result;
}

int DenyIoOpen(AVFormatContext*, AVIOContext**, const char*, int, AVDictionary**) {
  return AVERROR(EPERM);
}

}  // namespace

namespace {

// One stream's presentation span while its packets are read (MeasureSegmentSeconds).
class StreamSpan {
 public:
  bool started() const { return first_ != AV_NOPTS_VALUE; }
  void Add(int64_t ts, int64_t duration) {
    times_.push_back(ts);
    if (first_ == AV_NOPTS_VALUE || ts < first_) first_ = ts;
    if (last_ == AV_NOPTS_VALUE || ts > last_) {
      last_ = ts;
      last_duration_ = duration;
    }
    if (end_ == AV_NOPTS_VALUE || ts + duration > end_) end_ = ts + duration;
  }
  // The span so far, each packet counted with its own duration.
  double SoFar(AVRational time_base) const {
    return static_cast<double>(end_ - first_) * av_q2d(time_base);
  }
  // The whole span: when the last packet has no duration, the packet interval (the smallest gap
  // between times) stands in for it.
  double Total(AVRational time_base) {
    int64_t end = end_;
    if (last_duration_ == 0) {
      std::sort(times_.begin(), times_.end());
      int64_t gap = 0;
      for (size_t i = 1; i < times_.size(); ++i) {
        const int64_t d = times_[i] - times_[i - 1];
        if (d > 0 && (gap == 0 || d < gap)) gap = d;
      }
      end = std::max(end, last_ + gap);
    }
    return static_cast<double>(end - first_) * av_q2d(time_base);
  }

 private:
  int64_t first_ = AV_NOPTS_VALUE;
  int64_t last_ = AV_NOPTS_VALUE;  // the latest presentation time...
  int64_t last_duration_ = 0;      // ...and its packet's duration
  int64_t end_ = AV_NOPTS_VALUE;   // max of pts + duration
  std::vector<int64_t> times_;
};

}  // namespace

std::optional<SegmentSeconds> MeasureSegmentSeconds(std::string_view segment,
                                                    const std::string& formats, int64_t max_packets,
                                                    double stop_above) {
  if (segment.empty()) return std::nullopt;
  media::InitFfmpeg();
  // Opened without avformat_find_stream_info, which may decode frames to probe the streams.
  media::MemoryReader reader(segment);
  if (reader.io() == nullptr) return std::nullopt;
  AVFormatContext* raw = avformat_alloc_context();
  if (raw == nullptr) return std::nullopt;
  raw->pb = reader.io();
  raw->flags |= AVFMT_FLAG_CUSTOM_IO;
  raw->io_open = &DenyIoOpen;
  AVDictionary* opts = nullptr;
  if (!formats.empty()) av_dict_set(&opts, "format_whitelist", formats.c_str(), 0);
  const int ret = avformat_open_input(&raw, nullptr, nullptr, &opts);  // frees raw on failure
  av_dict_free(&opts);
  if (ret < 0) return std::nullopt;
  media::AvInputFormatContextPtr fmt(raw);  // closed before `reader` goes
  AvPacketPtr pkt(av_packet_alloc());
  if (!pkt) return std::nullopt;

  // The first video stream and the first audio stream (MPEG-TS may add streams while reading).
  // The video's span is the segment's duration; an audio-only segment (a stream's later segment
  // may carry only audio, which is then copied or re-encoded) is measured by its audio.
  struct Tracked {
    int index = -1;
    AVRational time_base{0, 1};
    StreamSpan span;
  };
  Tracked video, audio;
  for (int64_t n = 0; n < max_packets && av_read_frame(fmt.get(), pkt.get()) >= 0; ++n) {
    const AVStream* st = fmt->streams[pkt->stream_index];
    const bool timed = st->time_base.num > 0 && st->time_base.den > 0;
    if (video.index < 0 && timed && st->codecpar->codec_type == AVMEDIA_TYPE_VIDEO &&
        (st->disposition & AV_DISPOSITION_ATTACHED_PIC) == 0) {
      video.index = pkt->stream_index;
      video.time_base = st->time_base;
    } else if (audio.index < 0 && timed && st->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) {
      audio.index = pkt->stream_index;
      audio.time_base = st->time_base;
    }
    const int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
    const int64_t duration = std::max<int64_t>(pkt->duration, 0);
    const int stream = pkt->stream_index;
    av_packet_unref(pkt.get());
    if (ts == AV_NOPTS_VALUE) continue;
    Tracked* t = stream == video.index ? &video : stream == audio.index ? &audio : nullptr;
    if (t == nullptr) continue;
    t->span.Add(ts, duration);
    // Over already: the video's span, or the audio's while no video has been seen.
    if (t == &video || !video.span.started()) {
      const double so_far = t->span.SoFar(t->time_base);
      if (so_far > stop_above) return SegmentSeconds{so_far, t == &video};
    }
  }
  if (video.span.started()) return SegmentSeconds{video.span.Total(video.time_base), true};
  if (audio.span.started()) return SegmentSeconds{audio.span.Total(audio.time_base), false};
  return std::nullopt;
}

absl::Status CheckSegmentLimits(std::string_view segment, int64_t max_bytes, double max_seconds,
                                const std::string& formats, int64_t max_packets,
                                const std::string& what) {
  if (static_cast<int64_t>(segment.size()) > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", segment.size(), " bytes, more than the limit of ", max_bytes));
  }
  if (max_seconds <= 0) return absl::OkStatus();
  // A little slack for timestamps in units that do not divide the limit (1/90000 s in MPEG-TS).
  // Measured to the end (demuxing alone is cheap and bounded by max_packets), so that the message
  // gives the segment's whole duration.
  const double slack = 1e-6;
  auto measured =
      MeasureSegmentSeconds(segment, formats, max_packets, std::numeric_limits<double>::infinity());
  if (measured && measured->seconds > max_seconds + slack) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %.3f s of %s, more than the limit of %g s", what, measured->seconds,
                        measured->video ? "video" : "audio", max_seconds));
  }
  return absl::OkStatus();
}

absl::StatusOr<TranscodeResult> TranscodeSegment(std::string_view segment,
                                                 const std::vector<RenditionSpec>& ladder,
                                                 const TranscodeOptions& options,
                                                 const std::function<bool()>& cancelled) {
  SegmentTranscoder transcoder(segment, ladder, options, cancelled);
  return transcoder.Run();
}

namespace internal {

absl::StatusOr<TranscodeResult> TranscodeStreamSegment(StreamState& state, std::string_view segment,
                                                       const std::vector<RenditionSpec>& ladder,
                                                       const TranscodeOptions& options,
                                                       const StreamSegment& how,
                                                       const std::function<bool()>& cancelled) {
  SegmentTranscoder transcoder(segment, ladder, options, cancelled, &state, how);
  return transcoder.Run();
}

}  // namespace internal

}  // namespace switchyard::orchestrator

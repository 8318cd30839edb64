#include "orchestrator/serving/orchestrator_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/hardware_challenge.h"
#include "common/logging.h"
#include "common/media/image_codec.h"
#include "common/media/video_challenge.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/receipt.h"
#include "common/status.h"
#include "common/tenant.h"
#include "orchestrator/pipelines/upscale_pipeline.h"
#include "orchestrator/serving/request_context.h"
#include "orchestrator/serving/unary_pipeline.h"
#include "orchestrator/transcode/transcoder.h"
#include "runner/hardware_challenge.h"

namespace switchyard::orchestrator {
namespace {

std::string RequestId(const grpc::ServerContext* context) {
  const auto& md = context->client_metadata();
  auto it = md.find("x-request-id");
  if (it == md.end()) return "-";
  // It names the job in this node's log lines: cut and escaped so a caller cannot forge or flood
  // them (the gateway sends ids of 32 hex digits, which pass unchanged).
  return LogSafe(std::string_view(it->second.data(), it->second.size()));
}

// The tenant the gateway sent (common/tenant.h): the namespace of the caller's stream ids; "" when
// none was sent. INVALID_ARGUMENT when it is too long to key sessions by.
absl::StatusOr<std::string> TenantOf(const grpc::ServerContext* context) {
  const auto& md = context->client_metadata();
  auto it = md.find(kTenantMetadataKey);
  if (it == md.end()) return std::string();
  if (it->second.size() > kMaxTenantBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("tenant is ", it->second.size(), " bytes; at most ", kMaxTenantBytes));
  }
  return std::string(it->second.data(), it->second.size());
}

absl::Time Deadline(const grpc::ServerContext* context) {
  auto d = context->deadline();
  if (d == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(d);
}

// The upscale pipeline's descriptor (unary_pipeline.h): the image is decoded in Run, against the
// model's max_input_pixels.
struct UpscalePipeline : UnaryDescriptor<v1::UpscaleRequest, false> {
  struct Params {};
  static absl::StatusOr<Params> Validate(const Request& request, const ModelConfig*) {
    if (request.image().empty()) {
      return absl::InvalidArgumentError("image is required (PNG or JPEG)");
    }
    return Params{};
  }
  static absl::StatusOr<std::string> Run(const RunContext& ctx, const Request& request, Params&,
                                         Response* response) {
    auto result = RunUpscale(*ctx.executor, request.image(), ctx.model->max_input_pixels,
                             ctx.deadline, ctx.is_cancelled);
    if (!result.ok()) return result.status();
    auto* media = response->add_images();
    media->set_data(std::move(result->png));
    media->set_content_type("image/png");
    media->set_width(result->output_width);
    media->set_height(result->output_height);
    return absl::StrCat(result->input_width, "x", result->input_height, " -> ",
                        result->output_width, "x", result->output_height);
  }
};

}  // namespace

std::string RequestIdOf(const grpc::ServerContext* context) { return RequestId(context); }

int64_t ReportedUnits(const absl::StatusOr<int64_t>& units, const std::string& rid) {
  if (units.ok()) return *units;
  // The node cannot measure its own result (a bug): it reports 0 rather than a guess.
  spdlog::error("[{}] cannot count the job's units: {}", rid,
                LogSafe(units.status().ToString(), kLogSafeMaxErrorBytes));
  return 0;
}

absl::Time DeadlineOf(const grpc::ServerContext* context) { return Deadline(context); }

absl::StatusOr<OrchestratorService::AcquiredModel> OrchestratorService::AcquireModel(
    grpc::ServerContext* context, const std::string& pipeline, const std::string& model_id) {
  if (model_id.empty()) return absl::InvalidArgumentError("model_id is required");
  const ModelConfig* config = models_->Find(model_id);
  if (config == nullptr || config->pipeline != pipeline) {
    return absl::NotFoundError(absl::StrCat("model '", model_id, "' is not a ", pipeline,
                                            " model served by ", config_.node_id));
  }
  auto executor = models_->Acquire(model_id, Deadline(context));
  if (!executor.ok()) return executor.status();
  return AcquiredModel{config, *executor};
}

void OrchestratorService::FillJobInfo(grpc::ServerContext* context, const ModelConfig& model,
                                      int64_t units, absl::Time start, v1::JobInfo* job) const {
  job->set_request_id(RequestId(context));
  job->set_orchestrator(config_.node_id);
  job->set_model_id(model.id);
  job->set_units(units + config_.test_inflate_units);
  job->set_price_per_unit(model.price_per_unit);
  job->set_compute_ms(absl::ToDoubleMilliseconds(absl::Now() - start));
}

void OrchestratorService::SignReceipt(grpc::ServerContext* context, const char* pipeline,
                                      const std::string& request_sha256,
                                      const std::string& result_sha256, absl::Time start,
                                      v1::JobInfo* job) const {
  const NodeKey* key = identity_;
  if (config_.test_receipt_fault == "omit") return;
  if (config_.test_receipt_fault == "forge") key = forged_identity_.get();
  if (key == nullptr) return;
  const auto& md = context->client_metadata();
  auto header = [&md](const char* name) {
    auto it = md.find(name);
    if (it == md.end() || it->second.size() > kMaxReceiptIdBytes) return std::string();
    return std::string(it->second.data(), it->second.size());
  };
  v1::JobReceipt* r = job->mutable_receipt();
  r->set_job_id(header(kJobIdMetadata));
  r->set_gateway_id(header(kGatewayIdMetadata));
  r->set_node_id(config_.node_id);
  r->set_pipeline(pipeline);
  r->set_model_id(job->model_id());
  r->set_units(job->units());
  r->set_price_per_unit(job->price_per_unit());
  r->set_request_sha256(request_sha256);
  r->set_result_sha256(result_sha256);
  r->set_start_unix_ms(ReceiptMillis(start));
  r->set_end_unix_ms(ReceiptMillis(absl::Now()));
  if (absl::Status st = ::switchyard::SignReceipt(*key, r); !st.ok()) {
    spdlog::error("[{}] cannot sign the job's receipt: {}", RequestId(context), st.ToString());
    job->clear_receipt();
    return;
  }
  if (config_.test_receipt_fault == "forge") {
    r->set_node_public_key(identity_ != nullptr ? identity_->public_key() : std::string());
  }
}

bool OrchestratorService::DrawOutputFault() const {
  if (config_.test_output_fault_rate <= 0) return false;
  // SplitMix64 of (seed, draw number): a sequence a test can rely on, whatever the threads.
  uint64_t z =
      config_.test_output_fault_seed +
      (output_fault_draws_.fetch_add(1, std::memory_order_relaxed) + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  const double u = static_cast<double>(z >> 11) * 0x1.0p-53;
  return u < config_.test_output_fault_rate;
}

void OrchestratorService::PerturbImages(const std::string& rid, v1::ImageResponse* response) const {
  for (auto& out : *response->mutable_images()) {
    auto image = media::DecodeImage(out.data(), int64_t{1} << 28);
    if (!image.ok()) continue;
    // The first row (at most 64 pixels) inverted: a difference of up to 255 in every channel.
    const size_t n = std::min<size_t>(image->pixels.size(), 3 * 64);
    for (size_t i = 0; i < n; ++i) image->pixels[i] = static_cast<uint8_t>(255 - image->pixels[i]);
    auto png = media::EncodePng(*image);
    if (!png.ok()) continue;
    out.set_data(*std::move(png));
    out.set_content_type("image/png");
  }
  spdlog::warn(
      "[{}] test_output_fault: this job's result was perturbed on purpose (for tests only)", rid);
}

void OrchestratorService::PerturbRenditions(const std::string& rid,
                                            v1::TranscodeResponse* response) const {
  for (auto& out : *response->mutable_renditions())
    out.mutable_data()->resize(out.data().size() / 2);
  spdlog::warn(
      "[{}] test_output_fault: this transcode's renditions were cut short on purpose (for tests "
      "only)",
      rid);
}

OrchestratorService::OrchestratorService(const OrchestratorConfig& config, ModelManager* models,
                                         StatusBoard* board)
    : config_(config), admin_auth_(AdminAuth::FromConfig(config)), models_(models), board_(board) {
  if (config_.test_receipt_fault == "forge") {
    auto key = NodeKey::Generate();
    if (key.ok()) forged_identity_ = *std::move(key);
  }
  TranscodeSessionsOptions sessions;
  sessions.capacity = config_.transcode.capacity;
  sessions.idle_timeout = absl::Milliseconds(config_.transcode.session_idle_timeout_ms);
  sessions.max_sessions_per_tenant = config_.transcode.SessionsPerKey();
  transcode_sessions_ = std::make_unique<TranscodeSessions>(sessions, [board] {
    if (board != nullptr) board->Changed();
  });
}

SWITCHYARD_SERVE_UNARY(Upscale, UpscalePipeline)

grpc::Status OrchestratorService::Transcode(grpc::ServerContext* context,
                                            const v1::TranscodeRequest* request,
                                            v1::TranscodeResponse* response) {
  const std::string rid = RequestId(context);
  absl::Time start = absl::Now();
  if (!config_.transcode.enabled) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("transcoding is not enabled on ", config_.node_id));
  }
  if (request->segment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "segment is required");
  }
  if (request->stream_id().size() > kMaxStreamIdBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("stream_id is ", request->stream_id().size(),
                                     " bytes; at most ", kMaxStreamIdBytes, " allowed"));
  }
  auto tenant = TenantOf(context);
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  TranscodeOptions options;
  options.max_renditions = config_.transcode.max_renditions;
  options.encoder_threads = config_.transcode.encoder_threads;
  options.parallel_renditions = config_.transcode.parallel_renditions;
  options.scale_from_larger = config_.transcode.scale_from_larger;
  options.thread_policy = config_.transcode.thread_policy;
  options.cores = config_.transcode.cores;
  options.hw_decode = config_.transcode.hw_decode;
  options.hw_encode = config_.transcode.hw_encode;
  options.gpu_scale = config_.transcode.gpu_scale;
  options.max_input_bytes = config_.transcode.max_segment_bytes;
  options.max_input_seconds = config_.transcode.max_segment_seconds;
  if (!request->audio_codec().empty()) options.audio_codec = request->audio_codec();
  if (request->audio_bitrate_bps() != 0) options.audio_bitrate_bps = request->audio_bitrate_bps();
  if (!request->container().empty()) {
    if (request->container() != "mpegts" && request->container() != "mp4") {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("container '", request->container(), "' is not 'mpegts' or 'mp4'"));
    }
    options.container = request->container();
  }
  std::vector<RenditionSpec> ladder;
  for (const auto& r : request->renditions()) {
    RenditionSpec s;
    s.name = r.name();
    s.width = r.width();
    s.height = r.height();
    s.bitrate_bps = r.bitrate_bps();
    s.fps_num = r.fps_num();
    s.fps_den = r.fps_den();
    s.gop_seconds = r.gop_seconds();
    if (!r.preset().empty()) s.preset = r.preset();
    if (!r.profile().empty()) s.profile = r.profile();
    s.intra_only = r.intra_only();
    ladder.push_back(std::move(s));
  }

  // Capacity is checked before any work: a full node refuses at once so the gateway can go
  // elsewhere (segments of a stream already open here are always taken).
  absl::Time deadline = Deadline(context);
  auto result = transcode_sessions_->Transcode(
      *tenant, request->stream_id(), request->sequence(), request->segment(), ladder, options,
      [context, deadline] { return context->IsCancelled() || absl::Now() > deadline; });
  if (!result.ok()) {
    if (result.status().code() == absl::StatusCode::kResourceExhausted) {
      // The gateway tries another node but does not wait for room here on the key's behalf.
      if (IsTenantLimit(result.status())) context->AddTrailingMetadata(kTenantLimitTrailerKey, "1");
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrCat(config_.node_id, ": ", result.status().message()));
    }
    spdlog::warn("[{}] transcode failed: {}", rid,
                 LogSafe(result.status().ToString(), kLogSafeMaxErrorBytes));
    if (result.status().code() == absl::StatusCode::kCancelled && absl::Now() > deadline) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline passed while transcoding");
    }
    return ToGrpcStatus(result.status());
  }
  int64_t pixels = 0;
  for (auto& out : result->renditions) {
    auto* r = response->add_renditions();
    auto* spec = r->mutable_rendition();
    spec->set_name(out.spec.name);
    spec->set_width(out.spec.width);
    spec->set_height(out.spec.height);
    spec->set_bitrate_bps(out.spec.bitrate_bps);
    spec->set_fps_num(out.spec.fps_num);
    spec->set_fps_den(out.spec.fps_den);
    spec->set_gop_seconds(out.spec.gop_seconds);
    spec->set_preset(out.spec.preset);
    spec->set_profile(out.spec.profile);
    spec->set_intra_only(out.spec.intra_only);
    r->set_data(std::move(out.data));
    r->set_frames(out.frames);
    r->set_width(out.width);
    r->set_height(out.height);
    r->set_pixels(out.frames * out.width * out.height);
    pixels += r->pixels();
  }
  response->set_input_frames(result->input_frames);
  response->set_duration_seconds(result->duration_seconds);
  // FOR TESTS ONLY: a cheating node (test_output_fault); it signs what it returns.
  if (DrawOutputFault()) PerturbRenditions(rid, response);
  ResultDigest result_digest;
  result_digest.Add(*response);  // before its JobInfo
  auto* job = response->mutable_job();
  job->set_request_id(rid);
  job->set_orchestrator(config_.node_id);
  job->set_model_id(result->hardware_encoded ? "h264_nvenc" : "libx264");
  // pixels (frames x size as the encoders counted them) and the metered count agree; the metered
  // one is what the gateway checks (common/metering.h).
  job->set_units(ReportedUnits(metering::Units(*request, *response), rid) +
                 config_.test_inflate_units);
  job->set_price_per_unit(config_.transcode.price_per_unit);
  job->set_compute_ms(absl::ToDoubleMilliseconds(absl::Now() - start));
  SignReceipt(context, pipelines::kTranscode, RequestDigest(*request), result_digest.Finish(),
              start, job);
  if (transcode_realtime_ != nullptr && job->compute_ms() > 0) {
    transcode_realtime_->Observe(result->duration_seconds / (job->compute_ms() / 1000));
  }
  spdlog::info(
      "[{}] transcode {} frames ({} decode, {} encode; threads: {}; scaling: {}) -> {} "
      "renditions in {:.0f} ms",
      rid, result->input_frames, result->hardware_decoded ? "GPU" : "software",
      result->hardware_encoded ? "NVENC" : "libx264", result->thread_plan, result->scale_plan,
      response->renditions_size(), job->compute_ms());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::CheckAdmin(grpc::ServerContext* context,
                                             absl::string_view call) const {
  const auto& md = context->client_metadata();
  auto find = [&md](const char* key) -> std::optional<absl::string_view> {
    auto it = md.find(key);
    if (it == md.end()) return std::nullopt;
    return absl::string_view(it->second.data(), it->second.size());
  };
  absl::Status st =
      admin_auth_.Check(call, find(AdminAuth::kSecretMetadata), find("authorization"));
  if (st.ok()) return grpc::Status::OK;
  spdlog::warn("[{}] refused {} from {}: {}", RequestId(context), std::string(call),
               context->peer(), LogSafe(std::string(st.message()), kLogSafeMaxErrorBytes));
  return ToGrpcStatus(st);
}

grpc::Status OrchestratorService::CloseTranscodeSession(
    grpc::ServerContext* context, const node::v1::CloseTranscodeSessionRequest* request,
    node::v1::CloseTranscodeSessionResponse* response) {
  if (grpc::Status admin = CheckAdmin(context, "CloseTranscodeSession"); !admin.ok()) return admin;
  if (request->stream_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "stream_id is required");
  }
  auto tenant = TenantOf(context);  // the caller's stream of that id, not another key's
  if (!tenant.ok()) return ToGrpcStatus(tenant.status());
  response->set_closed(transcode_sessions_->Close(*tenant, request->stream_id()));
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::GetStatus(grpc::ServerContext*, const node::v1::GetStatusRequest*,
                                            node::v1::NodeStatus* response) {
  *response = BuildStatus();
  // A static gateway (no registration) learns the key here; it is proven only by the receipts
  // it signs (docs/security.md, "Receipts").
  if (identity_ != nullptr) response->mutable_identity()->set_public_key(identity_->public_key());
  return grpc::Status::OK;
}

namespace {

// One challenge (matrix or video) at a time: a challenge takes the whole device for a moment, and
// anyone who can reach this port can send one.
class ChallengeSlot {
 public:
  explicit ChallengeSlot(std::atomic<bool>* running)
      : running_(running), taken_(!running->exchange(true)) {}
  ~ChallengeSlot() {
    if (taken_) *running_ = false;
  }
  ChallengeSlot(const ChallengeSlot&) = delete;
  ChallengeSlot& operator=(const ChallengeSlot&) = delete;
  bool taken() const { return taken_; }
  static grpc::Status Busy() {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, kChallengeBusyMessage);
  }

 private:
  std::atomic<bool>* const running_;
  const bool taken_;
};

}  // namespace

grpc::Status OrchestratorService::HardwareChallenge(
    grpc::ServerContext* context, const node::v1::HardwareChallengeRequest* request,
    node::v1::HardwareChallengeResponse* response) {
  if (auto st = ValidateChallenge(*request); !st.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("hardware challenge: ", st.message()));
  }
  ChallengeSlot slot(&challenge_running_);
  if (!slot.taken()) return ChallengeSlot::Busy();
  const absl::Time start = absl::Now();
  auto answer = runner::RunHardwareChallenge(*request, "auto");
  if (!answer.ok()) {
    spdlog::warn("hardware challenge from {} failed: {}", context->peer(),
                 answer.status().ToString());
    return ToGrpcStatus(answer.status());
  }
  if (config_.test_challenge_fault) {
    for (auto& d : answer->digests) d[0] = static_cast<char>(d[0] ^ 0x01);
    spdlog::warn("test_challenge_fault: answering a hardware challenge wrongly (for tests only)");
  }
  for (auto& d : answer->digests) response->add_digests(std::move(d));
  response->set_device(answer->device);
  spdlog::info("hardware challenge from {}: {} products of {}x{} on {} in {}", context->peer(),
               request->matrices(), request->size(), request->size(), answer->device,
               absl::FormatDuration(absl::Now() - start));
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::VideoChallenge(grpc::ServerContext* context,
                                                 const node::v1::VideoChallengeRequest* request,
                                                 node::v1::VideoChallengeResponse* response) {
  if (auto st = media::ValidateVideoChallenge(*request); !st.ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("video challenge: ", st.message()));
  }
  ChallengeSlot slot(&challenge_running_);
  if (!slot.taken()) return ChallengeSlot::Busy();
  const absl::Time start = absl::Now();
  // NVDEC and NVENC unless the test-only flag forces the software codecs (the NVDEC/NVENC path
  // has not run on a GPU in our tests).
  auto answer = media::AnswerVideoChallenge(*request, config_.test_video_challenge_software);
  if (!answer.ok()) {
    spdlog::warn("video challenge from {} failed: {}", context->peer(), answer.status().ToString());
    return ToGrpcStatus(answer.status());
  }
  *response = *std::move(answer);
  if (config_.test_challenge_fault) {
    for (auto* digests : {response->mutable_h264_digests(), response->mutable_hevc_digests()}) {
      for (auto& d : *digests) d[0] = static_cast<char>(d[0] ^ 0x01);
    }
    if (!response->encoded_h264().empty()) {
      response->mutable_encoded_h264()->resize(response->encoded_h264().size() / 2);
    }
    spdlog::warn("test_challenge_fault: answering a video challenge wrongly (for tests only)");
  }
  spdlog::info("video challenge from {}: {} + {} frames decoded, {} encoded on {} in {}",
               context->peer(), response->h264_digests_size(), response->hevc_digests_size(),
               request->encode_frames(), response->device(),
               absl::FormatDuration(absl::Now() - start));
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::ModelAdminCall(
    grpc::ServerContext* context, const char* call, const char* verb,
    const node::v1::ModelRequest& request, node::v1::NodeCapability* response,
    const std::function<absl::Status(const std::string& model_id)>& action) {
  if (grpc::Status admin = CheckAdmin(context, call); !admin.ok()) return admin;
  if (request.model_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "model_id is required");
  }
  spdlog::info("[{}] admin: {} {}", RequestId(context), verb, LogSafe(request.model_id()));
  if (absl::Status st = action(request.model_id()); !st.ok()) return ToGrpcStatus(st);
  *response = models_->CapabilityOf(request.model_id());
  return grpc::Status::OK;
}

grpc::Status OrchestratorService::LoadModel(grpc::ServerContext* context,
                                            const node::v1::ModelRequest* request,
                                            node::v1::NodeCapability* response) {
  return ModelAdminCall(context, "LoadModel", "load", *request, response,
                        [this, context](const std::string& model_id) {
                          return models_->Load(model_id, Deadline(context));
                        });
}

grpc::Status OrchestratorService::UnloadModel(grpc::ServerContext* context,
                                              const node::v1::ModelRequest* request,
                                              node::v1::NodeCapability* response) {
  return ModelAdminCall(context, "UnloadModel", "unload", *request, response,
                        [this](const std::string& model_id) { return models_->Unload(model_id); });
}

node::v1::NodeStatus OrchestratorService::BuildStatus() const {
  node::v1::NodeStatus s;
  s.set_node_id(config_.node_id);
  {
    std::lock_guard<std::mutex> lock(address_mu_);
    s.set_address(advertise_address_);
  }
  s.set_draining(draining_.load());
  for (const auto& h : hardware_) s.add_hardware(h);
  for (const auto& h : config_.test_hardware_claim) {
    if (std::find(hardware_.begin(), hardware_.end(), h) == hardware_.end()) s.add_hardware(h);
  }
  for (auto& c : models_->Capabilities()) *s.add_capabilities() = std::move(c);
  if (config_.transcode.enabled) {
    auto* t = s.add_capabilities();
    t->set_pipeline("transcode");
    t->set_model_id("libx264");
    t->set_state(node::v1::MODEL_STATE_READY);
    t->set_capacity(config_.transcode.capacity);
    t->set_in_use(transcode_sessions_->in_use());
    t->set_price_per_unit(config_.transcode.price_per_unit);
    t->set_unit("pixel");
  }
  return s;
}

}  // namespace switchyard::orchestrator

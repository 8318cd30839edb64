#include "gateway/api/gateway_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <type_traits>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/metering.h"
#include "common/pipelines.h"
#include "common/quote_units.h"
#include "common/receipt.h"
#include "common/status.h"
#include "common/tenant.h"
#include "gateway/api/client_cancelled.h"
#include "gateway/api/packed_masks.h"
#include "gateway/api/unary_dispatch.h"

namespace switchyard::gateway {
namespace {

using Stub = node::v1::Orchestrator::Stub;

grpc::ServerUnaryReactor* FinishNow(grpc::CallbackServerContext* context, grpc::Status status) {
  auto* reactor = context->DefaultReactor();
  reactor->Finish(std::move(status));
  return reactor;
}

grpc::Status InvalidArgument(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

constexpr size_t kMaxStreamIdBytes = 128;           // as the orchestrator allows
constexpr const char* kTranscodeModel = "libx264";  // transcode's capability model
constexpr const char* kModelRequired = "model_id is required (see ListCapabilities)";
constexpr const char* kImageRequired = "image is required (PNG or JPEG bytes)";

grpc::Status Required(bool missing, const char* message) {
  return missing ? InvalidArgument(message) : grpc::Status::OK;
}

grpc::Status CheckStreamId(const std::string& stream_id) {
  if (stream_id.size() <= kMaxStreamIdBytes) return grpc::Status::OK;
  return InvalidArgument(absl::StrCat("stream_id is ", stream_id.size(), " bytes; at most ",
                                      kMaxStreamIdBytes, " allowed"));
}

// The inputs a pipeline's request must carry, checked before it is routed (Route checks the model
// id after them; a live video segment names its model first).
template <typename Request>
grpc::Status CheckRequest(const Request& r) {
  if constexpr (std::is_same_v<Request, v1::TextToImageRequest>) {
    return Required(r.prompt().empty(), "prompt is required");
  } else if constexpr (std::is_same_v<Request, v1::AudioToTextRequest>) {
    return Required(r.audio().empty(), "audio is required");
  } else if constexpr (std::is_same_v<Request, v1::TextToSpeechRequest>) {
    return Required(r.text().empty(), "text is required");
  } else if constexpr (std::is_same_v<Request, v1::LiveVideoSegmentRequest>) {
    if (r.model_id().empty()) return InvalidArgument(kModelRequired);
    if (r.segment().empty()) return InvalidArgument("segment is required (MPEG-TS bytes)");
    return CheckStreamId(r.stream_id());
  } else {  // upscale, image-to-image, image-to-video, segment-anything-2, image-to-text
    return Required(r.image().empty(), kImageRequired);
  }
}

// The checks every transcode segment must pass before it is routed.
grpc::Status CheckSegment(const v1::TranscodeRequest& request) {
  if (request.segment().empty()) {
    return InvalidArgument("segment is required (MPEG-TS or MP4 bytes)");
  }
  if (request.renditions().empty()) return InvalidArgument("at least one rendition is required");
  return CheckStreamId(request.stream_id());
}

bool SameRenditions(const google::protobuf::RepeatedPtrField<v1::Rendition>& a,
                    const google::protobuf::RepeatedPtrField<v1::Rendition>& b) {
  if (a.size() != b.size()) return false;
  for (int i = 0; i < a.size(); ++i) {
    if (a[i].SerializeAsString() != b[i].SerializeAsString()) return false;
  }
  return true;
}

}  // namespace

// A job refused for want of a node under its price cap, when the cap came from x-max-total-price:
// the message says so (declared in gateway_service.h).
grpc::Status WithTotalCap(grpc::Status status, double max_total_price) {
  if (max_total_price <= 0 || status.error_code() != grpc::StatusCode::NOT_FOUND ||
      !absl::StrContains(status.error_message(), "price cap")) {
    return status;
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND,
                      absl::StrCat(status.error_message(), "; the cap is x-max-total-price ",
                                   max_total_price, " over the request's quoted units"));
}

GatewayService::GatewayService(const GatewayConfig& config, Membership* membership,
                               std::function<uint64_t()> random)
    : config_(config),
      membership_(membership),
      router_(config.routing, random),
      wait_queue_(config.max_queued_jobs),
      room_(&wait_queue_),
      affinity_(std::make_unique<StreamAffinity>(absl::Milliseconds(config.stream_idle_timeout_ms),
                                                 kMaxTrackedStreams)),
      random_(random) {
  auto answer_threads = ThreadPool::Create("sy-answer", kAnswerThreads);
  if (answer_threads.ok()) answer_threads_ = *std::move(answer_threads);  // cannot fail
  env_.config = &config_;
  env_.snapshot = [membership] { return membership->snapshot(); };
  env_.router = &router_;
  env_.room = &room_;
  env_.demand = &warm_demand_;
  env_.job_log = &job_log_;
}

std::string GatewayService::ApiKeyIdOf(const grpc::CallbackServerContext* context) const {
  return auth_ != nullptr ? auth_->KeyIdOf(context) : std::string();
}

CallIdentity GatewayService::IdentityOf(const grpc::CallbackServerContext* context) const {
  return CallIdentity::Of(context->client_metadata(), ApiKeyIdOf(context), random_);
}

grpc::ServerUnaryReactor* GatewayService::RefuseUnauthorized(
    grpc::CallbackServerContext* context) const {
  if (auth_ == nullptr) return nullptr;
  grpc::Status st = auth_->Check(context);
  return st.ok() ? nullptr : FinishNow(context, std::move(st));
}

absl::StatusOr<RouteRequest> GatewayService::MakeRoute(grpc::CallbackServerContext* context,
                                                       const std::string& pipeline,
                                                       const std::string& model_id) const {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) {
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
    }
  }
  RouteRequest route{pipeline, model_id, {}, config_.PriceCap(pipeline, model_id), ""};
  const auto& md = context->client_metadata();
  if (auto it = md.find("x-max-price-per-unit"); it != md.end()) {
    std::string text(it->second.data(), it->second.size());
    double cap = 0;
    if (!absl::SimpleAtod(text, &cap) || !(cap > 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "x-max-price-per-unit must be a positive number (price per unit), got '", text, "'"));
    }
    route.max_price_per_unit = cap;
  }
  if (auto it = md.find("x-max-total-price"); it != md.end()) {
    auto total = metering::ParseMaxTotalPrice(
        absl::string_view(it->second.data(), it->second.size()), "x-max-total-price");
    if (!total.ok()) return total.status();
    route.max_total_price = *total;
  }
  return route;
}

template <typename Request>
absl::Status GatewayService::CapForTotal(const Request& request, RouteRequest* route) const {
  if (route->max_total_price <= 0) return absl::OkStatus();
  auto quote = metering::QuoteUnitsOf(request);
  if (!quote.ok()) return quote.status();
  if (quote->basis == metering::QuoteBasis::kUnknown) {
    return absl::FailedPreconditionError(absl::StrCat("x-max-total-price cannot be honoured for ",
                                                      route->pipeline, ": ", quote->note));
  }
  if (quote->units <= 0) return absl::OkStatus();  // nothing to bill
  double cap = metering::PriceWithinTotal(route->max_total_price, quote->units);
  // 0 would mean "no cap": the smallest positive price keeps only free nodes.
  if (!(cap > 0)) cap = std::numeric_limits<double>::denorm_min();
  if (route->max_price_per_unit <= 0 || cap < route->max_price_per_unit) {
    route->max_price_per_unit = cap;
  }
  return absl::OkStatus();
}
// The LLM's handler is in gateway_service_llm.cc.
template absl::Status GatewayService::CapForTotal(const v1::LLMRequest&, RouteRequest*) const;

template <typename Request, typename Response>
void GatewayService::Dispatch(grpc::CallbackServerContext* context, const Request* request,
                              Response* response, RouteRequest route,
                              UnaryMethod<Request, Response> method,
                              std::function<void(grpc::Status)> answer,
                              std::function<void(const std::string&)> on_success,
                              std::string tenant) {
  typename UnaryTransport<Request, Response>::Units units;
  if (billing_ != nullptr) {  // counting may decode the media: only when metered
    units = [](const Request& req, const Response& resp, const NodeView&) {
      SettleUnits settle{resp.job().units(), resp.job().price_per_unit(),
                         metering::Units(req, resp)};
      SetReceiptInputs(req, resp, &settle);
      return std::optional<SettleUnits>(std::move(settle));
    };
  }
  auto transport = std::make_unique<UnaryTransport<Request, Response>>(
      context, request, response,
      [method](const NodeView& node, grpc::ClientContext* ctx, const Request* req, Response* resp,
               std::function<void(grpc::Status)> done) {
        (node.connection->stub()->async()->*method)(ctx, req, resp, std::move(done));
      },
      std::move(units), std::move(answer));
  transport->set_on_success(std::move(on_success));
  auto job =
      JobDispatch::Create(env_, DispatchPolicy::Unary(), std::move(route), IdentityOf(context),
                          ClientDeadline(context), std::move(transport));
  job->set_tenant(std::move(tenant));
  job->Start();
}

template <typename Request, typename Response>
grpc::ServerUnaryReactor* GatewayService::Route(grpc::CallbackServerContext* context,
                                                const Request* request, Response* response,
                                                UnaryMethod<Request, Response> method) {
  using Pipeline = pipelines::PipelineOf<Request>;
  static_assert(std::is_same_v<Response, typename Pipeline::Response>);
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (auto st = CheckRequest(*request); !st.ok()) return FinishNow(context, std::move(st));
  const std::string& model_id = Pipeline::ModelId(*request);
  if (model_id.empty()) return FinishNow(context, InvalidArgument(kModelRequired));
  auto route = MakeRoute(context, Pipeline::kName, model_id);
  if (!route.ok()) return FinishNow(context, ToGrpcStatus(route.status()));
  if (absl::Status st = CapForTotal(*request, &*route); !st.ok()) {
    return FinishNow(context, ToGrpcStatus(st));
  }
  std::function<void(const std::string&)> on_success;
  if constexpr (std::is_same_v<Request, v1::LiveVideoSegmentRequest>) {
    if (!request->stream_id().empty()) {
      // The orchestrator keeps no state between segments, but a stream stays on one node while
      // it can (warm model, no cold start elsewhere). Its own key space in the affinity table.
      const std::string key = absl::StrCat(Pipeline::kName, "/", request->stream_id());
      route->preferred = affinity_->NodeOf(ApiKeyIdOf(context), key);
      on_success = [this, tenant = ApiKeyIdOf(context), key, home = route->preferred](
                       const std::string& node) { affinity_->Record(tenant, key, home, node); };
    }
  }
  // What the nodes are sent: the client's request, except that segment-anything-2's masks are
  // asked for packed and printed as JSON here (packed_masks.h), for clients that want JSON.
  std::shared_ptr<const Request> node_request;
  std::function<grpc::Status()> unpack = [] { return grpc::Status::OK; };
  if constexpr (std::is_same_v<Request, v1::SegmentAnything2Request>) {
    if (!request->packed_tensors()) {
      auto packed = std::make_shared<Request>(*request);
      packed->set_packed_tensors(true);
      node_request = std::move(packed);
      unpack = [response, max_bytes = config_.max_message_bytes] {
        return ToGrpcStatus(UnpackMasksToJson(response, max_bytes));
      };
    }
  }
  const Request* sent = node_request != nullptr ? node_request.get() : request;
  auto* reactor = context->DefaultReactor();
  const double max_total_price = route->max_total_price;
  std::function<void(grpc::Status)> answer = [reactor, max_total_price, node_request,
                                              unpack](grpc::Status st) {
    if (st.ok()) st = unpack();
    reactor->Finish(WithTotalCap(std::move(st), max_total_price));
  };
  if (spot_checker_ != nullptr) {
    // Spot checks (spot_check.h): a sampled job's request and result (as the node sent it) are
    // copied before the client is answered (they go with the call), and re-run elsewhere after.
    answer = [this, reactor, sent, node_request, unpack, response, method,
              max_total_price](grpc::Status st) {
      std::optional<SpotChecker::Job> check;
      if (st.ok()) check = SpotCheckOf(*sent, *response, method);
      if (st.ok()) st = unpack();
      reactor->Finish(WithTotalCap(std::move(st), max_total_price));
      if (check) spot_checker_->Start(*std::move(check));
    };
  }
  if (node_request != nullptr && answer_threads_ != nullptr) {
    // Masks to print as JSON (about 20 ms per 512x512 answer): written on the answer threads.
    answer = [threads = answer_threads_.get(), answer](grpc::Status st) {
      if (!st.ok()) return answer(std::move(st));
      threads->Post([answer, st] { answer(st); });
    };
  }
  // A live video segment's ledger row is charged to the session's key (the HTTP session
  // forwards it), like every job's.
  Dispatch(context, sent, response, *std::move(route), method, std::move(answer),
           std::move(on_success));
  return reactor;
}

template <typename Request, typename Response>
std::optional<SpotChecker::Job> GatewayService::SpotCheckOf(const Request& request,
                                                            const Response& response,
                                                            UnaryMethod<Request, Response> method) {
  std::string pipeline;
  std::string model_id;
  bool seeded = false;
  if constexpr (std::is_same_v<Request, v1::TranscodeRequest>) {
    pipeline = pipelines::kTranscode;
    model_id = kTranscodeModel;
  } else {
    using Pipeline = pipelines::PipelineOf<Request>;
    pipeline = Pipeline::kName;
    model_id = Pipeline::ModelId(request);
    if constexpr (requires { request.has_seed(); }) seeded = request.has_seed();
  }
  if (response.job().orchestrator().empty() || !spot_checker_->Sample(pipeline, model_id, seeded)) {
    return std::nullopt;
  }
  SpotChecker::Job job;
  job.pipeline = pipeline;
  job.model_id = model_id;
  job.request_id = response.job().request_id();
  job.first = SpotResultOf(response.job().orchestrator(), response);
  auto copy = std::make_shared<const Request>(request);
  job.run = [copy, method](const NodeView& node, grpc::ClientContext* ctx, SpotChecker::Done done) {
    auto result = std::make_shared<Response>();
    (node.connection->stub()->async()->*method)(
        ctx, copy.get(), result.get(), [copy, result, done = std::move(done)](grpc::Status st) {
          if (!st.ok()) {
            done(absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message()));
            return;
          }
          done(SpotResultOf(std::string(), *result));
        });
  };
  return job;
}

void GatewayService::StartTranscode(grpc::CallbackServerContext* context,
                                    const v1::TranscodeRequest* request,
                                    v1::TranscodeResponse* response, RouteRequest route,
                                    std::function<void(grpc::Status)> finish) {
  std::function<void(const std::string&)> on_success;
  // Streams are the caller's key's: the same stream id under another key is another stream, here
  // and in the orchestrator's sessions (docs/security.md).
  std::string tenant = ApiKeyIdOf(context);
  if (!request->stream_id().empty()) {
    // The stream stays where its session is; if that node cannot take it, the router picks
    // another and the stream moves there.
    const std::string home = affinity_->NodeOf(tenant, request->stream_id());
    route.preferred = home;
    on_success = [this, tenant, id = request->stream_id(), home](const std::string& node) {
      const std::string next = affinity_->Record(tenant, id, home, node);
      if (!home.empty() && home != node) {
        spdlog::info("stream '{}' moved from {} to {}", LogSafe(id), LogSafe(home), node);
        CloseSessionOn(home, tenant, id);
      }
      // Another gateway placed the stream elsewhere meanwhile (a shared store): its next segments
      // go there, so the session this one opened is not needed.
      if (next != node) CloseSessionOn(node, tenant, id);
    };
  }
  Dispatch(context, request, response, std::move(route), &Stub::async_interface::Transcode,
           std::move(finish), std::move(on_success), std::move(tenant));
}

void GatewayService::CloseSessionOn(const std::string& node_id, const std::string& tenant,
                                    const std::string& stream_id) {
  auto snapshot = membership_->snapshot();
  for (const auto& node : snapshot->nodes) {
    if (node->id != node_id || node->connection == nullptr) continue;
    // Best effort: a node that is gone has no session to close, and one that does not answer
    // closes it at its idle timeout.
    struct Call {
      grpc::ClientContext context;
      node::v1::CloseTranscodeSessionRequest request;
      node::v1::CloseTranscodeSessionResponse response;
    };
    auto* call = new Call;
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    // The node refuses this admin call without a credential it has configured: send back the
    // secret it registered with, never another of ours to an address a node chose. Static nodes
    // get none (security.md): one that requires a credential closes the session when idle.
    if (!node->credential.empty()) {
      call->context.AddMetadata("x-switchyard-registration-secret", node->credential);
    }
    call->request.set_stream_id(stream_id);
    if (!tenant.empty()) call->context.AddMetadata(kTenantMetadataKey, tenant);
    node->connection->stub()->async()->CloseTranscodeSession(
        &call->context, &call->request, &call->response,
        [call, node_id, stream_id](grpc::Status status) {
          if (!status.ok()) {
            spdlog::debug("closing stream '{}' on {}: {}", LogSafe(stream_id), node_id,
                          status.error_message());
          }
          delete call;
        });
    return;
  }
}

grpc::ServerUnaryReactor* GatewayService::Transcode(grpc::CallbackServerContext* context,
                                                    const v1::TranscodeRequest* request,
                                                    v1::TranscodeResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  if (auto st = CheckSegment(*request); !st.ok()) return FinishNow(context, std::move(st));
  auto route = MakeRoute(context, pipelines::kTranscode, kTranscodeModel);
  if (!route.ok()) return FinishNow(context, ToGrpcStatus(route.status()));
  if (absl::Status st = CapForTotal(*request, &*route); !st.ok()) {
    return FinishNow(context, ToGrpcStatus(st));
  }
  auto* reactor = context->DefaultReactor();
  const double max_total_price = route->max_total_price;
  std::function<void(grpc::Status)> answer = [reactor, max_total_price](grpc::Status st) {
    reactor->Finish(WithTotalCap(std::move(st), max_total_price));
  };
  // Spot checks (spot_check.h) of single segments; a stream's segment runs in its session on its
  // node, which keeps state between segments, so a re-run elsewhere is not comparable.
  if (spot_checker_ != nullptr && request->stream_id().empty()) {
    answer = [this, reactor, request, response, max_total_price](grpc::Status st) {
      std::optional<SpotChecker::Job> check;
      if (st.ok()) check = SpotCheckOf(*request, *response, &Stub::async_interface::Transcode);
      reactor->Finish(WithTotalCap(std::move(st), max_total_price));
      if (check) spot_checker_->Start(*std::move(check));
    };
  }
  StartTranscode(context, request, response, *std::move(route), std::move(answer));
  return reactor;
}

// A live stream: reads a segment, runs it (routed with the stream's affinity, retried elsewhere
// like any job), writes its outcome, then reads the next. One segment is in flight at a time,
// because the orchestrator's session runs a stream's segments in order anyway. Deletes itself in
// OnDone, which gRPC calls only after Finish and once no operation is pending; Finish is called
// only when no segment job is running, so no job outlives the reactor.
class GatewayService::TranscodeStreamReactor final
    : public grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse> {
 public:
  TranscodeStreamReactor(GatewayService* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    auto route = service_->MakeRoute(context, pipelines::kTranscode, kTranscodeModel);
    if (!route.ok()) {
      Finish(ToGrpcStatus(route.status()));
      return;
    }
    if (route->max_total_price > 0) {
      // A total is per job, and a stream is many jobs of unknown number.
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "x-max-total-price is for one job; a TranscodeStream runs many (send "
                          "x-max-price-per-unit, or x-max-total-price with each Transcode call)"));
      return;
    }
    route_ = *std::move(route);
    tenant_ = service_->ApiKeyIdOf(context);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) return End();  // the client closed its side, or the call was cancelled
    if (first_) {
      first_ = false;
      if (request_.renditions().empty()) {
        return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   "the stream's first message must set the renditions"));
      }
      stream_id_ = request_.stream_id();
      if (stream_id_.empty()) {
        stream_id_ = absl::StrCat("stream-", NewHexId(service_->random_));
      } else if (stream_id_.size() > kMaxStreamIdBytes) {
        return Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                   absl::StrCat("stream_id is ", stream_id_.size(),
                                                " bytes; at most ", kMaxStreamIdBytes)));
      }
      ladder_ = request_.renditions();
      container_ = request_.container();
    }
    const int64_t index = received_++;
    grpc::Status invalid = grpc::Status::OK;
    if (!request_.stream_id().empty() && request_.stream_id() != stream_id_) {
      invalid = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                             absl::StrCat("stream_id '", request_.stream_id(),
                                          "' differs from the stream's '", stream_id_, "'"));
    }
    // Later messages inherit the ladder and container; a new ladder applies from then on.
    if (request_.renditions().empty()) {
      *request_.mutable_renditions() = ladder_;
    } else if (!SameRenditions(request_.renditions(), ladder_)) {
      ladder_ = request_.renditions();
    }
    if (request_.container().empty()) {
      request_.set_container(container_);
    } else {
      container_ = request_.container();
    }
    request_.set_stream_id(stream_id_);
    if (request_.sequence() == 0) request_.set_sequence(index);
    if (invalid.ok()) invalid = CheckSegment(request_);
    if (!invalid.ok()) return Write(invalid);
    service_->StartTranscode(context_, &request_, &result_, route_,
                             [this](grpc::Status status) { Write(std::move(status)); });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return End();
    request_.Clear();
    result_.Clear();
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  void Write(grpc::Status status) {
    response_.Clear();
    response_.set_stream_id(stream_id_);
    response_.set_sequence(request_.sequence());
    response_.set_code(status.error_code());
    if (status.ok()) {
      *response_.mutable_result() = std::move(result_);
    } else {
      response_.set_error(status.error_message());
    }
    StartWrite(&response_);
  }

  void End() {
    if (!stream_id_.empty()) {
      if (auto node = service_->affinity_->Forget(tenant_, stream_id_)) {
        service_->CloseSessionOn(*node, tenant_, stream_id_);
      }
    }
    Finish(context_->IsCancelled() ? ClientCancelled() : grpc::Status::OK);
  }

  GatewayService* service_;
  grpc::CallbackServerContext* context_;
  RouteRequest route_;
  std::string tenant_;  // the caller's API key id: its streams are its own
  bool first_ = true;
  std::string stream_id_;
  google::protobuf::RepeatedPtrField<v1::Rendition> ladder_;
  std::string container_;
  int64_t received_ = 0;
  v1::TranscodeRequest request_;
  v1::TranscodeResponse result_;
  v1::TranscodeStreamResponse response_;
};

grpc::ServerBidiReactor<v1::TranscodeRequest, v1::TranscodeStreamResponse>*
GatewayService::TranscodeStream(grpc::CallbackServerContext* context) {
  return new TranscodeStreamReactor(this, context);
}

grpc::ServerUnaryReactor* GatewayService::ListCapabilities(
    grpc::CallbackServerContext* context, const v1::ListCapabilitiesRequest* request,
    v1::ListCapabilitiesResponse* response) {
  if (auth_ != nullptr) {
    if (grpc::Status st = auth_->Check(context); !st.ok()) return FinishNow(context, st);
  }
  auto snapshot = membership_->snapshot();
  std::map<std::pair<std::string, std::string>, v1::Capability> caps;
  for (const auto& node : snapshot->nodes) {
    auto* info = response->add_orchestrators();
    info->set_id(node->id);
    info->set_address(node->connection->address());
    info->set_source(node->source == NodeSource::kStatic ? "static" : "registered");
    info->set_ready(!node->status.draining());
    info->set_in_flight(node->connection->in_flight().load());
    for (const auto& h : node->status.hardware()) info->add_hardware(h);
    const auto check = hardware_checker_ != nullptr ? hardware_checker_->Lookup(node->id)
                                                    : std::optional<HardwareCheckRecord>();
    info->set_hardware_check(
        HardwareVerdictName(check ? check->verdict : HardwareVerdict::kUnchecked));
    if (check) info->set_hardware_check_detail(check->detail);
    for (const auto& c : node->status.capabilities()) {
      if (!request->pipeline().empty() && c.pipeline() != request->pipeline()) continue;
      const bool warm = c.state() == node::v1::MODEL_STATE_READY;
      auto* offer = response->add_offers();
      offer->set_orchestrator(node->id);
      offer->set_address(node->connection->address());
      offer->set_pipeline(c.pipeline());
      offer->set_model_id(c.model_id());
      offer->set_warm(warm);
      offer->set_state(ModelStateName(c.state()));
      offer->set_capacity(c.capacity());
      offer->set_in_use(c.in_use());
      offer->set_price_per_unit(c.price_per_unit());
      offer->set_unit(c.unit());

      auto [it, fresh] = caps.try_emplace({c.pipeline(), c.model_id()});
      v1::Capability& agg = it->second;
      if (fresh) {
        agg.set_pipeline(c.pipeline());
        agg.set_model_id(c.model_id());
        agg.set_unit(c.unit());
        agg.set_min_price_per_unit(c.price_per_unit());
      }
      agg.set_orchestrators(agg.orchestrators() + 1);
      agg.set_warm_orchestrators(agg.warm_orchestrators() + (warm ? 1 : 0));
      agg.set_capacity(agg.capacity() + c.capacity());
      agg.set_in_use(agg.in_use() + c.in_use());
      agg.set_min_price_per_unit(std::min(agg.min_price_per_unit(), c.price_per_unit()));
    }
  }
  for (auto& [key, cap] : caps) *response->add_capabilities() = std::move(cap);
  return FinishNow(context, grpc::Status::OK);
}

// The unary pipelines' handlers: each routes its request by the pipeline table (Route).
#define SWITCHYARD_ROUTED(Method, Response, name)                                        \
  grpc::ServerUnaryReactor* GatewayService::Method(grpc::CallbackServerContext* context, \
                                                   const v1::Method##Request* request,   \
                                                   v1::Response* response) {             \
    return Route(context, request, response, &Stub::async_interface::Method);            \
  }
SWITCHYARD_UNARY_PIPELINES(SWITCHYARD_ROUTED)
#undef SWITCHYARD_ROUTED

grpc::Status GatewayService::UsageQueryOf(grpc::CallbackServerContext* context, int64_t since_unix,
                                          int64_t until_unix, const std::string& api_key_id,
                                          UsageLedger** ledger, UsageQuery* out) const {
  *ledger = billing_ != nullptr ? billing_->ledger() : nullptr;
  if (*ledger == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this gateway keeps no usage ledger (set usage_ledger in its config, "
                        "docs/metering.md)");
  }
  if (since_unix < 0 || until_unix < 0 || (until_unix != 0 && until_unix <= since_unix)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("since_unix (", since_unix, ") and until_unix (", until_unix,
                                     ") must be >= 0 and since before until"));
  }
  const std::string caller = ApiKeyIdOf(context);
  UsageQuery query;
  query.api_key_id = caller;
  if (!api_key_id.empty() && api_key_id != caller) {
    // Another key's usage, or everyone's: operators only, and only with keys configured (an
    // open gateway cannot tell an operator from anyone else).
    const auto& admins = config_.usage_admin_key_ids;
    if (auth_ == nullptr || caller.empty() ||
        std::find(admins.begin(), admins.end(), caller) == admins.end()) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("API key '", caller,
                                       "' may only read its own usage (another key's needs a key "
                                       "listed in usage_admin_key_ids)"));
    }
    query.all_keys = api_key_id == "*";
    query.api_key_id = api_key_id;
  }
  if (since_unix > 0) query.since = absl::FromUnixSeconds(since_unix);
  if (until_unix > 0) query.until = absl::FromUnixSeconds(until_unix);
  *out = std::move(query);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* GatewayService::GetUsage(grpc::CallbackServerContext* context,
                                                   const v1::GetUsageRequest* request,
                                                   v1::GetUsageResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  UsageLedger* ledger = nullptr;
  UsageQuery query;
  if (grpc::Status st = UsageQueryOf(context, request->since_unix(), request->until_unix(),
                                     request->api_key_id(), &ledger, &query);
      !st.ok()) {
    return FinishNow(context, std::move(st));
  }
  auto totals = ledger->Totals(query);
  if (!totals.ok()) return FinishNow(context, ToGrpcStatus(totals.status()));
  for (const auto& t : *totals) {
    auto* out = response->add_totals();
    out->set_api_key_id(t.api_key_id);
    out->set_pipeline(t.pipeline);
    out->set_model_id(t.model_id);
    out->set_unit(t.unit);
    out->set_jobs(t.jobs);
    out->set_units(t.units);
    out->set_amount(t.amount);
    out->set_disputed_jobs(t.disputed_jobs);
    response->set_jobs(response->jobs() + t.jobs);
    response->set_amount(response->amount() + t.amount);
  }
  return FinishNow(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* GatewayService::ListUsageRows(grpc::CallbackServerContext* context,
                                                        const v1::ListUsageRowsRequest* request,
                                                        v1::ListUsageRowsResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  UsageLedger* ledger = nullptr;
  UsageQuery query;
  if (grpc::Status st = UsageQueryOf(context, request->since_unix(), request->until_unix(),
                                     request->api_key_id(), &ledger, &query);
      !st.ok()) {
    return FinishNow(context, std::move(st));
  }
  if (request->page_size() < 0 || request->page_size() > kMaxUsageRowsPage) {
    return FinishNow(context,
                     InvalidArgument(absl::StrCat("page_size is ", request->page_size(), "; 1 to ",
                                                  kMaxUsageRowsPage, " (0: 500)")));
  }
  query.limit = request->page_size() == 0 ? 500 : static_cast<size_t>(request->page_size());
  if (!request->page_token().empty()) {
    // "<completed unix ms>:<job id>" of the last row of the previous page.
    const std::string& token = request->page_token();
    const size_t colon = token.find(':');
    int64_t ms = 0;
    if (token.size() > kMaxUsagePageTokenBytes || colon == std::string::npos ||
        !absl::SimpleAtoi(absl::string_view(token).substr(0, colon), &ms) ||
        colon + 1 == token.size()) {
      return FinishNow(context, InvalidArgument("page_token is not one this gateway returned"));
    }
    query.after = std::make_pair(ms, token.substr(colon + 1));
  }
  auto rows = ledger->Rows(query);
  if (!rows.ok()) return FinishNow(context, ToGrpcStatus(rows.status()));
  for (const UsageRecord& r : *rows) {
    v1::UsageRow* out = response->add_rows();
    out->set_job_id(r.job_id);
    out->set_api_key_id(r.api_key_id);
    out->set_pipeline(r.pipeline);
    out->set_model_id(r.model_id);
    out->set_orchestrator(r.orchestrator);
    out->set_unit(r.unit);
    out->set_units(r.units);
    out->set_reported_units(r.reported_units);
    out->set_price_per_unit(r.price_per_unit);
    out->set_reported_price_per_unit(r.reported_price_per_unit);
    out->set_amount(r.amount);
    out->set_disputed(r.disputed);
    out->set_dispute(r.dispute);
    out->set_completed_unix_ms(absl::ToUnixMillis(r.completed));
    out->set_receipt_status(r.receipt_status);
    if (!r.receipt.empty()) {
      // Stored by this gateway from a receipt it parsed: it reads back.
      auto json = ParseJson(r.receipt);
      if (json.ok()) {
        auto receipt = ReceiptFromJson(*json);
        if (receipt.ok()) *out->mutable_receipt() = *std::move(receipt);
      }
    }
  }
  if (query.limit > 0 && rows->size() == query.limit) {
    const UsageRecord& last = rows->back();
    response->set_next_page_token(
        absl::StrCat(absl::ToUnixMillis(last.completed), ":", last.job_id));
  }
  return FinishNow(context, grpc::Status::OK);
}

namespace {

constexpr size_t kMaxExplainPipelineBytes = 64;
constexpr size_t kMaxExplainModelBytes = 256;

// The request's fields, checked before anything is looked up; OK or INVALID_ARGUMENT.
grpc::Status ValidateExplain(const v1::ExplainRouteRequest& request) {
  if (request.pipeline().empty() || request.model_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "ExplainRoute needs a pipeline and a model_id");
  }
  if (request.pipeline().size() > kMaxExplainPipelineBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("pipeline is ", request.pipeline().size(), " bytes; at most ",
                                     kMaxExplainPipelineBytes));
  }
  if (pipelines::Find(request.pipeline()) == nullptr) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("unknown pipeline '", LogSafe(request.pipeline()),
                     "' (one of: ", pipelines::ModelPipelineNames(), ", transcode, kserve)"));
  }
  if (request.model_id().size() > kMaxExplainModelBytes) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("model_id is ", request.model_id().size(), " bytes; at most ",
                                     kMaxExplainModelBytes));
  }
  if (!metering::ValidPrice(request.max_price_per_unit())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "max_price_per_unit must be a finite number >= 0 (0: no cap)");
  }
  return grpc::Status::OK;
}

}  // namespace

grpc::ServerUnaryReactor* GatewayService::ExplainRoute(grpc::CallbackServerContext* context,
                                                       const v1::ExplainRouteRequest* request,
                                                       v1::ExplainRouteResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  // Node addresses and prices are the operators': with API keys, only admin keys may see them.
  // An open gateway cannot tell an operator from anyone else, and shows its nodes on /status.
  if (auth_ != nullptr) {
    const std::string caller = ApiKeyIdOf(context);
    const auto& admins = config_.usage_admin_key_ids;
    if (caller.empty() || std::find(admins.begin(), admins.end(), caller) == admins.end()) {
      return FinishNow(context,
                       grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                                    absl::StrCat("API key '", caller,
                                                 "' may not explain routes (it shows node "
                                                 "addresses and prices: operators' keys only, "
                                                 "listed in usage_admin_key_ids)")));
    }
  }
  if (grpc::Status valid = ValidateExplain(*request); !valid.ok()) {
    return FinishNow(context, std::move(valid));
  }
  RouteRequest route;
  route.pipeline = request->pipeline();
  route.model_id = request->model_id();
  route.max_price_per_unit = request->max_price_per_unit();
  const SnapshotPtr snapshot = membership_->snapshot();
  const RouteExplanation explained = router_.Explain(*snapshot, route);
  response->set_offering(explained.offering);
  response->set_eligible(explained.eligible);
  for (const CandidateExplanation& c : explained.candidates) {
    v1::RouteCandidate* out = response->add_candidates();
    out->set_node_id(c.node_id);
    out->set_address(c.address);
    out->set_tier(std::string(RouteTierName(c.tier)));
    if (c.filter != RouteFilter::kNone) out->set_filter(std::string(RouteFilterName(c.filter)));
    out->set_reason(c.reason);
    if (c.ejected_until.has_value()) {
      out->set_ejected_until_unix_ms(absl::ToUnixMillis(*c.ejected_until));
    }
    out->set_price_per_unit(c.price_per_unit);
    out->set_model_state(c.model_state);
    out->set_load(c.load);
    out->set_latency_ms(c.latency_ms);
    out->set_measured(c.measured);
    out->set_score(c.score);
    out->set_free_memory_mb(c.free_memory_mb);
    out->set_best(c.best);
  }
  return FinishNow(context, grpc::Status::OK);
}

template <typename Request>
grpc::Status GatewayService::QuoteOf(grpc::CallbackServerContext* context, const Request& request,
                                     const std::string& pipeline, const std::string& model_id,
                                     v1::QuoteResponse* response) const {
  auto route = MakeRoute(context, pipeline, model_id);
  if (!route.ok()) return ToGrpcStatus(route.status());
  auto units = metering::QuoteUnitsOf(request);
  if (!units.ok()) return ToGrpcStatus(units.status());
  if (absl::Status st = CapForTotal(request, &*route); !st.ok()) return ToGrpcStatus(st);
  // The router's judgement without choosing: Explain counts nothing (a quote is not a job).
  const SnapshotPtr snapshot = membership_->snapshot();
  const RouteExplanation explained = router_.Explain(*snapshot, *route);
  const CandidateExplanation* best = nullptr;
  double lowest = std::numeric_limits<double>::infinity(), highest = 0;
  for (const CandidateExplanation& c : explained.candidates) {
    if (c.filter != RouteFilter::kNone) continue;
    lowest = std::min(lowest, c.price_per_unit);
    highest = std::max(highest, c.price_per_unit);
    if (c.best) best = &c;
  }
  if (best == nullptr) {
    // No node can take the job now: the error the job would get. Pick counts decisions only when
    // it chooses, which it cannot on this snapshot.
    auto picked = router_.Pick(*snapshot, *route);
    if (!picked.ok()) {
      return WithTotalCap(ToGrpcStatus(picked.status()), route->max_total_price);
    }
    return grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("no orchestrator can take ", pipeline, " '", LogSafe(model_id), "' now"));
  }
  double price = best->price_per_unit;
  if (route->max_price_per_unit > 0) price = std::min(price, route->max_price_per_unit);
  response->set_pipeline(pipeline);
  response->set_model_id(model_id);
  response->set_unit(metering::UnitOf(pipeline));
  response->set_units(units->units);
  response->set_units_basis(std::string(metering::QuoteBasisName(units->basis)));
  response->set_units_exact(units->basis == metering::QuoteBasis::kExact);
  response->set_units_note(units->note);
  response->set_orchestrator(best->node_id);
  response->set_price_per_unit(price);
  if (units->basis != metering::QuoteBasis::kUnknown) {
    response->set_total(static_cast<double>(units->units) * price);
  }
  response->set_min_price_per_unit(lowest);
  response->set_max_price_per_unit(highest);
  response->set_eligible(explained.eligible);
  response->set_price_cap_per_unit(route->max_price_per_unit);
  response->set_max_total_price(route->max_total_price);
  response->set_quoted_unix_ms(absl::ToUnixMillis(absl::Now()));
  return grpc::Status::OK;
}

namespace {

// The request's own checks, as its job makes them before routing (the model id after them).
template <typename Request>
grpc::Status CheckQuoted(const Request& request) {
  if constexpr (std::is_same_v<Request, v1::LLMRequest>) {
    return grpc::Status::OK;  // QuoteUnitsOf checks its messages
  } else {
    return CheckRequest(request);
  }
}

}  // namespace

grpc::ServerUnaryReactor* GatewayService::Quote(grpc::CallbackServerContext* context,
                                                const v1::QuoteRequest* request,
                                                v1::QuoteResponse* response) {
  if (auto* refused = RefuseUnauthorized(context)) return refused;
  auto unary = [&](const auto& r) -> grpc::Status {
    using Pipeline = pipelines::PipelineOf<std::remove_cvref_t<decltype(r)>>;
    if (grpc::Status st = CheckQuoted(r); !st.ok()) return st;
    const std::string& model_id = Pipeline::ModelId(r);
    if (model_id.empty()) return InvalidArgument(kModelRequired);
    return QuoteOf(context, r, Pipeline::kName, model_id, response);
  };
  grpc::Status status;
  switch (request->request_case()) {
    case v1::QuoteRequest::kUpscale:
      status = unary(request->upscale());
      break;
    case v1::QuoteRequest::kTextToImage:
      status = unary(request->text_to_image());
      break;
    case v1::QuoteRequest::kImageToImage:
      status = unary(request->image_to_image());
      break;
    case v1::QuoteRequest::kImageToVideo:
      status = unary(request->image_to_video());
      break;
    case v1::QuoteRequest::kAudioToText:
      status = unary(request->audio_to_text());
      break;
    case v1::QuoteRequest::kSegmentAnything2:
      status = unary(request->segment_anything_2());
      break;
    case v1::QuoteRequest::kLlm:
      status = unary(request->llm());
      break;
    case v1::QuoteRequest::kImageToText:
      status = unary(request->image_to_text());
      break;
    case v1::QuoteRequest::kTextToSpeech:
      status = unary(request->text_to_speech());
      break;
    case v1::QuoteRequest::kLiveVideoSegment:
      status = unary(request->live_video_segment());
      break;
    case v1::QuoteRequest::kTranscode:
      status = CheckSegment(request->transcode());
      if (status.ok()) {
        status = QuoteOf(context, request->transcode(), pipelines::kTranscode, kTranscodeModel,
                         response);
      }
      break;
    case v1::QuoteRequest::REQUEST_NOT_SET:
      status = InvalidArgument(
          "a QuoteRequest holds one pipeline's request (upscale, text_to_image, llm, transcode, "
          "...)");
      break;
  }
  if (!status.ok()) response->Clear();
  return FinishNow(context, std::move(status));
}

}  // namespace switchyard::gateway

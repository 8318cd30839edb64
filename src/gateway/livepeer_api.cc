#include "gateway/livepeer_api.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <deque>
#include <limits>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/json_limits.h"
#include "common/logging.h"
#include "common/secure_random.h"
#include "gateway/api_keys.h"
#include "gateway/auth_interceptor.h"
#include "gateway/live_video.h"
#include "gateway/livepeer_api_internal.h"

namespace switchyard::gateway {
namespace livepeer {

http::Response HttpError(int status, const std::string& message) {
  return http::Json(status, Json{{"detail", {{"msg", message}}}}.dump(
                                -1, ' ', false, Json::error_handler_t::replace));
}

Params::Params(std::map<std::string, http::FormPart> form)
    : is_form_(true), form_(std::move(form)) {}

Params::Params(Json body) : is_form_(false), json_(std::move(body)) {}

bool Params::Has(const std::string& name) const {
  return is_form_ ? form_.count(name) > 0 : json_.contains(name) && !json_[name].is_null();
}

const Json* Params::Raw(const std::string& name) const {
  if (is_form_ || !Has(name)) return nullptr;
  return &json_[name];
}

void Params::Refuse(std::string message) {
  if (refusal_.empty()) refusal_ = std::move(message);
}

void Params::Fail(Json loc, const std::string& msg, const std::string& type) {
  Json full = Json::array({"body"});
  if (loc.is_array()) {
    for (auto& l : loc) full.push_back(l);
  } else {
    full.push_back(loc);
  }
  errors_.push_back({{"loc", full}, {"msg", msg}, {"type", type}});
}

http::Response Params::Error() const {
  if (!refusal_.empty()) return HttpError(400, refusal_);
  return http::Json(422,
                    Json{{"detail", errors_}}.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::optional<std::string> Params::Str(const std::string& name, bool required) {
  if (!Has(name)) {
    if (required) Fail(name, "Field required", "missing");
    return std::nullopt;
  }
  if (is_form_) return form_[name].data;
  const Json& v = json_[name];
  if (!v.is_string()) {
    Fail(name, "Input should be a valid string", "string_type");
    return std::nullopt;
  }
  return v.get<std::string>();
}

std::optional<std::string> Params::File(const std::string& name, bool required) {
  auto it = form_.find(name);
  if (it == form_.end() || it->second.data.empty()) {
    if (required) Fail(name, "Field required", "missing");
    return std::nullopt;
  }
  return std::move(it->second.data);
}

std::optional<int64_t> Params::Int(const std::string& name, int64_t min, int64_t max) {
  if (!Has(name)) return std::nullopt;
  int64_t value = 0;
  if (is_form_) {
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(form_[name].data), &value)) {
      Fail(name, "Input should be a valid integer, unable to parse string as an integer",
           "int_parsing");
      return std::nullopt;
    }
  } else {
    const Json& v = json_[name];
    if (v.is_number_integer()) {
      value = v.get<int64_t>();
    } else if (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>() &&
               std::abs(v.get<double>()) < 9e18) {
      value = static_cast<int64_t>(v.get<double>());
    } else {
      Fail(name, "Input should be a valid integer", "int_type");
      return std::nullopt;
    }
  }
  if (value < min) {
    Fail(name, absl::StrCat("Input should be greater than or equal to ", min),
         "greater_than_equal");
    return std::nullopt;
  }
  if (value > max) {
    Fail(name, absl::StrCat("Input should be less than or equal to ", max), "less_than_equal");
    return std::nullopt;
  }
  return value;
}

std::optional<double> Params::Number(const std::string& name) {
  if (!Has(name)) return std::nullopt;
  if (is_form_) {
    double value = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(form_[name].data), &value) ||
        !std::isfinite(value)) {
      Fail(name, "Input should be a valid number, unable to parse string as a number",
           "float_parsing");
      return std::nullopt;
    }
    return value;
  }
  const Json& v = json_[name];
  if (!v.is_number()) {
    Fail(name, "Input should be a valid number", "float_type");
    return std::nullopt;
  }
  return v.get<double>();
}

std::optional<bool> Params::Bool(const std::string& name) {
  if (!Has(name)) return std::nullopt;
  if (is_form_) {
    // pydantic's accepted spellings.
    const std::string v = absl::AsciiStrToLower(absl::StripAsciiWhitespace(form_[name].data));
    if (v == "true" || v == "1" || v == "yes" || v == "on" || v == "t" || v == "y") return true;
    if (v == "false" || v == "0" || v == "no" || v == "off" || v == "f" || v == "n") {
      return false;
    }
    Fail(name, "Input should be a valid boolean, unable to interpret input", "bool_parsing");
    return std::nullopt;
  }
  const Json& v = json_[name];
  if (!v.is_boolean()) {
    Fail(name, "Input should be a valid boolean", "bool_type");
    return std::nullopt;
  }
  return v.get<bool>();
}

namespace {

std::optional<std::string> Header(const http::Request& req, const std::string& name) {
  auto it = req.headers.find(name);
  if (it == req.headers.end()) return std::nullopt;
  return it->second;
}

}  // namespace

std::optional<Params> ReadForm(const http::Request& req, const http::Reply& reply) {
  if (req.method != "POST") {
    reply(HttpError(405, "use POST"));
    return std::nullopt;
  }
  const std::string ct = Header(req, "content-type").value_or("");
  if (!absl::StartsWithIgnoreCase(ct, "multipart/form-data")) {
    reply(HttpError(415, "the body must be multipart/form-data"));
    return std::nullopt;
  }
  auto form = http::ParseMultipartForm(ct, req.body);
  if (!form.ok()) {
    reply(HttpError(400, std::string(form.status().message())));
    return std::nullopt;
  }
  return Params(*std::move(form));
}

std::optional<Params> ReadJson(const http::Request& req, const http::Reply& reply) {
  if (req.method != "POST") {
    reply(HttpError(405, "use POST"));
    return std::nullopt;
  }
  const std::string ct = Header(req, "content-type").value_or("");
  if (!absl::StartsWithIgnoreCase(ct, "application/json")) {
    reply(HttpError(415, "the body must be application/json"));
    return std::nullopt;
  }
  // Depth-limited: a body nested a million levels parses, and then dump() or a copy of it recurses
  // once per level off the end of the stack.
  auto parsed = ParseJson(req.body);
  if (!parsed.ok()) {
    if (absl::Status depth = CheckJsonDepth(req.body); !depth.ok()) {
      reply(HttpError(400, absl::StrCat("request body: ", depth.message())));
      return std::nullopt;
    }
    reply(http::Json(
        422,
        Json{{"detail",
              {{{"loc", {"body", 0}}, {"msg", "JSON decode error"}, {"type", "json_invalid"}}}}}
            .dump()));
    return std::nullopt;
  }
  Json body = *std::move(parsed);
  if (!body.is_object()) {
    reply(http::Json(
        422, Json{{"detail",
                   {{{"loc", {"body"}},
                     {"msg", "Input should be a valid dictionary or object to extract fields from"},
                     {"type", "model_attributes_type"}}}}}
                 .dump()));
    return std::nullopt;
  }
  return Params(std::move(body));
}

void ReplyGrpcError(const StubPtr& stub, const grpc::Status& status, http::Reply reply,
                    const StatusRefiner& refine) {
  int code = refine ? refine(status) : 0;
  if (code == 0) code = HttpStatusForGrpc(status.error_code());
  if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
    return reply(HttpError(code, status.error_message()));
  }
  struct Call {
    grpc::ClientContext context;
    v1::ListCapabilitiesRequest request;
    v1::ListCapabilitiesResponse response;
  };
  auto call = std::make_shared<Call>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, code, message = status.error_message(), reply = std::move(reply)](grpc::Status st) {
        int ready = 0;
        for (const auto& o : call->response.orchestrators()) ready += o.ready() ? 1 : 0;
        if (st.ok() && ready == 0) {
          return reply(HttpError(503, absl::StrCat("no orchestrator available: ", message)));
        }
        reply(HttpError(code, message));
      });
}

namespace {

// gRPC metadata values are printable ASCII; anything else (HTTP allows bytes 0x80-0xFF in a
// header) makes gRPC abort the process as API misuse, so such a header is not forwarded.
bool IsMetadataValue(const std::string& value) {
  for (unsigned char c : value) {
    if (c < 0x20 || c > 0x7E) return false;
  }
  return true;
}

}  // namespace

void ForwardRequestId(const http::Request& req, grpc::ClientContext* context) {
  auto id = Header(req, "x-request-id");
  if (id && IsMetadataValue(*id)) context->AddMetadata("x-request-id", *id);
  // The API key travels on as gRPC metadata, so the gRPC API's one check covers HTTP too. A
  // value that cannot be one is no key: without it the call is refused as unauthenticated.
  auto auth = Header(req, "authorization");
  if (auth && IsMetadataValue(*auth)) context->AddMetadata("authorization", *auth);
}

std::string DataUrl(const std::string& content_type, const std::string& data) {
  return absl::StrCat("data:", content_type, ";base64,", absl::Base64Escape(data));
}

// A large decoded image is the client's to shrink: 413, as the spec lists for image inputs.
int ImageInputStatus(const grpc::Status& status) {
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
      absl::StrContains(status.error_message(), "pixels, more than the limit")) {
    return 413;
  }
  return 0;
}

namespace {

// Job and video ids: 128 bits from OpenSSL's CSPRNG (32 hex digits). The old std::mt19937_64
// ids could be predicted from a few hundred collected ones, and with them other clients' videos
// and results fetched.
std::string RandomId() { return SecureRandomHex(16); }

// Generated videos, kept in memory and served at GET /stream/<id>/<name> (as go-livepeer's
// gateway serves its object store there), and image-to-video's async results. Bounded in bytes
// and count; what is older than the TTL or pushed out by newer media is gone (404). Each entry
// belongs to an owner (OwnerOf: the API key that made it, "" without keys); asked for by another
// owner it is answered as unknown, so a key cannot tell another key's ids from made-up ones.
class Store {
 public:
  static constexpr size_t kMaxMediaBytes = size_t{512} << 20;
  static constexpr size_t kMaxJobs = 1000;
  static constexpr auto kTtl = std::chrono::hours(1);

  // Keeps `data` and returns its path.
  std::string PutMedia(const std::string& owner, const std::string& content_type, std::string data,
                       const std::string& name) {
    const std::string path = absl::StrCat("/stream/", RandomId(), "/", name);
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    media_bytes_ += data.size();
    media_[path] = {owner, content_type, std::make_shared<const std::string>(std::move(data)),
                    Clock::now()};
    media_order_.push_back(path);
    while (media_bytes_ > kMaxMediaBytes && media_order_.size() > 1) DropOldestMedia();
    return path;
  }

  std::optional<std::pair<std::string, std::shared_ptr<const std::string>>> GetMedia(
      const std::string& path, const std::string& owner) {
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    auto it = media_.find(path);
    if (it == media_.end() || it->second.owner != owner) return std::nullopt;
    return std::make_pair(it->second.content_type, it->second.data);
  }

  std::string NewJob(const std::string& owner) {
    std::string id = RandomId();
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    jobs_[id] = {owner, false, Json(), Clock::now()};
    job_order_.push_back(id);
    while (job_order_.size() > kMaxJobs) {
      jobs_.erase(job_order_.front());
      job_order_.pop_front();
    }
    return id;
  }

  void FinishJob(const std::string& id, Json result) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return;  // expired meanwhile
    it->second.done = true;
    it->second.result = std::move(result);
  }

  // {"status": "processing"} or {"status": "complete", "result": ...}; nullopt when unknown.
  std::optional<Json> JobStatus(const std::string& id, const std::string& owner) {
    std::lock_guard<std::mutex> lock(mu_);
    Expire();
    auto it = jobs_.find(id);
    if (it == jobs_.end() || it->second.owner != owner) return std::nullopt;
    if (!it->second.done) return Json{{"status", "processing"}};
    return Json{{"status", "complete"}, {"result", it->second.result}};
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct Media {
    std::string owner;
    std::string content_type;
    std::shared_ptr<const std::string> data;
    Clock::time_point created;
  };
  struct Job {
    std::string owner;
    bool done = false;
    Json result;
    Clock::time_point created;
  };

  void DropOldestMedia() {
    auto it = media_.find(media_order_.front());
    if (it != media_.end()) {
      media_bytes_ -= it->second.data->size();
      media_.erase(it);
    }
    media_order_.pop_front();
  }

  void Expire() {
    const auto cutoff = Clock::now() - kTtl;
    while (!media_order_.empty()) {
      auto it = media_.find(media_order_.front());
      if (it != media_.end() && it->second.created > cutoff) break;
      DropOldestMedia();
    }
    while (!job_order_.empty()) {
      auto it = jobs_.find(job_order_.front());
      if (it != jobs_.end() && it->second.created > cutoff) break;
      if (it != jobs_.end()) jobs_.erase(it);
      job_order_.pop_front();
    }
  }

  std::mutex mu_;
  std::map<std::string, Media> media_;
  std::deque<std::string> media_order_;
  size_t media_bytes_ = 0;
  std::map<std::string, Job> jobs_;
  std::deque<std::string> job_order_;
};

// Whom a request's stored results belong to: with API keys configured, the SHA-256 of the key it
// presented (the hash the keys file lists; read from Authorization or x-api-key exactly as the
// gRPC API's check reads them), "" when it presented none; without keys, everyone ("").
std::string OwnerOf(const ApiKeyAuth* auth, const http::Request& req) {
  if (auth == nullptr) return "";
  std::multimap<grpc::string_ref, grpc::string_ref> metadata;
  for (const char* name : {"authorization", "x-api-key"}) {
    auto it = req.headers.find(name);
    if (it != req.headers.end()) metadata.emplace(name, it->second);
  }
  const std::string key = ApiKeyAuth::PresentedKey(metadata);
  return key.empty() ? "" : Sha256Hex(key);
}

// The client's base URL for served media: absolute when it sent a Host header (so a client can
// fetch it as is), else the bare path.
std::string BaseUrl(const http::Request& req) {
  auto host = Header(req, "host");
  if (!host || host->empty()) return "";
  const std::string proto = Header(req, "x-forwarded-proto").value_or("http");
  return absl::StrCat(proto, "://", *host);
}

Json ImagesJson(const google::protobuf::RepeatedPtrField<v1::Media>& images) {
  Json out = Json::array();
  for (const auto& m : images) {
    const std::string type = m.content_type().empty() ? "image/png" : m.content_type();
    out.push_back({{"url", DataUrl(type, m.data())}, {"seed", m.seed()}, {"nsfw", m.nsfw()}});
  }
  return out;
}

// The fields the diffusion-style image paths share.
template <typename Req>
void ReadGenerationFields(Params& p, Req* r) {
  if (auto v = p.Str("loras")) r->set_loras(*v);
  if (auto v = p.Number("guidance_scale")) r->set_guidance_scale(static_cast<float>(*v));
  if (auto v = p.Str("negative_prompt")) r->set_negative_prompt(*v);
  if (auto v = p.Bool("safety_check")) r->set_safety_check(*v);
  if (auto v =
          p.Int("seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max())) {
    r->set_seed(*v);
  }
  if (auto v = p.Int("num_inference_steps", 1, std::numeric_limits<int32_t>::max())) {
    r->set_num_inference_steps(static_cast<int32_t>(*v));
  }
  if (auto v = p.Int("num_images_per_prompt", 1, std::numeric_limits<int32_t>::max())) {
    r->set_num_images_per_prompt(static_cast<int32_t>(*v));
  }
}

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();

void TextToImage(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadJson(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::TextToImageRequest, v1::ImageResponse>>();
  auto& r = call->request;
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->Str("prompt", true)) r.set_prompt(*v);
  if (auto v = p->Int("height", 1, kMaxInt32)) r.set_height(static_cast<int32_t>(*v));
  if (auto v = p->Int("width", 1, kMaxInt32)) r.set_width(static_cast<int32_t>(*v));
  ReadGenerationFields(*p, &r);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->TextToImage(c, rq, rs, std::move(cb));
      },
      [](const v1::ImageResponse& resp) {
        return Json{{"images", ImagesJson(resp.images())}};
      },
      std::move(reply));
}

void ImageToImage(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::ImageToImageRequest, v1::ImageResponse>>();
  auto& r = call->request;
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->Str("prompt", true)) r.set_prompt(*v);
  if (auto v = p->File("image", true)) r.set_image(std::move(*v));
  if (auto v = p->Number("strength")) r.set_strength(static_cast<float>(*v));
  if (auto v = p->Number("image_guidance_scale")) {
    r.set_image_guidance_scale(static_cast<float>(*v));
  }
  ReadGenerationFields(*p, &r);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->ImageToImage(c, rq, rs, std::move(cb));
      },
      [](const v1::ImageResponse& resp) {
        return Json{{"images", ImagesJson(resp.images())}};
      },
      std::move(reply), ImageInputStatus);
}

void Upscale(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::UpscaleRequest, v1::ImageResponse>>();
  auto& r = call->request;
  // The spec requires prompt too, but ESRGAN takes none and the Livepeer clients send an empty
  // one; a missing prompt is accepted as "".
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->File("image", true)) r.set_image(std::move(*v));
  if (auto v = p->Str("prompt")) r.set_prompt(*v);
  if (auto v = p->Bool("safety_check")) r.set_safety_check(*v);
  if (auto v = p->Int("seed", std::numeric_limits<int64_t>::min(),
                      std::numeric_limits<int64_t>::max())) {
    r.set_seed(*v);
  }
  if (auto v = p->Int("num_inference_steps", 1, kMaxInt32)) {
    r.set_num_inference_steps(static_cast<int32_t>(*v));
  }
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->Upscale(c, rq, rs, std::move(cb));
      },
      [](const v1::ImageResponse& resp) {
        return Json{{"images", ImagesJson(resp.images())}};
      },
      std::move(reply), ImageInputStatus);
}

// A JSON array of numbers nested `depth` deep (e.g. "[[1,2],[3,4]]" for 2), flattened; every
// innermost array must have `inner` values when inner > 0. Records a validation error otherwise.
std::optional<std::vector<double>> NumberArray(Params& p, const std::string& name, int depth,
                                               int inner, const std::string& shape) {
  auto text = p.Str(name);
  if (!text) return std::nullopt;
  // The walk below goes only `depth` levels down, but the field's text is the client's: parse it
  // with the same depth limit as a JSON body.
  if (absl::Status st = CheckJsonDepth(*text); !st.ok()) {
    p.Refuse(absl::StrCat(name, ": ", st.message()));
    return std::nullopt;
  }
  auto parsed = ParseJson(*text);
  const Json v = parsed.ok() ? *std::move(parsed) : Json(Json::value_t::discarded);
  std::vector<double> out;
  std::function<bool(const Json&, int)> walk = [&](const Json& j, int level) {
    if (!j.is_array()) return false;
    if (level == depth) {
      if (inner > 0 && static_cast<int>(j.size()) != inner) return false;
      for (const auto& x : j) {
        if (!x.is_number()) return false;
        out.push_back(x.get<double>());
      }
      return true;
    }
    for (const auto& x : j) {
      if (!walk(x, level + 1)) return false;
    }
    return true;
  };
  if (v.is_discarded() || !walk(v, 1)) {
    p.Fail(name, absl::StrCat("Value error, ", name, " must be a JSON array ", shape),
           "value_error");
    return std::nullopt;
  }
  return out;
}

void SegmentAnything2(const StubPtr& stub, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::SegmentAnything2Request, v1::MasksResponse>>();
  auto& r = call->request;
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->File("image", true)) r.set_image(std::move(*v));
  if (auto v = NumberArray(*p, "point_coords", 2, 2, "of [x, y] pairs, e.g. [[10, 20]]")) {
    for (double x : *v) r.add_point_coords(static_cast<float>(x));
  }
  if (auto v = NumberArray(*p, "point_labels", 1, 0, "of 0/1 labels, e.g. [1, 0]")) {
    for (double x : *v) {
      if (x != 0 && x != 1) {
        p->Fail("point_labels", "Value error, point_labels must be 0 or 1", "value_error");
        break;
      }
      r.add_point_labels(static_cast<int32_t>(x));
    }
  }
  if (auto v = NumberArray(*p, "box", 1, 4, "of 4 values [x0, y0, x1, y1]")) {
    for (double x : *v) r.add_box(static_cast<float>(x));
  }
  if (auto v = NumberArray(*p, "mask_input", 3, 0, "shaped 1xHxW")) {
    for (double x : *v) r.add_mask_input(static_cast<float>(x));
  }
  if (auto v = p->Bool("multimask_output")) r.set_multimask_output(*v);
  if (auto v = p->Bool("return_logits")) r.set_return_logits(*v);
  if (auto v = p->Bool("normalize_coords")) r.set_normalize_coords(*v);
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  RunUnary(
      stub, call,
      [stub](auto* c, auto* rq, auto* rs, auto cb) {
        stub->async()->SegmentAnything2(c, rq, rs, std::move(cb));
      },
      // Strings holding JSON, as the spec's MasksResponse has them.
      [](const v1::MasksResponse& resp) {
        return Json{{"masks", resp.masks()}, {"scores", resp.scores()}, {"logits", resp.logits()}};
      },
      std::move(reply), ImageInputStatus);
}

// Sync: answers with the videos' URLs. Async (the client sent "Prefer: respond-async", as
// go-livepeer's gateway takes it): 202 {"request_id"} at once; the result is then asked for at
// POST /image-to-video/result.
void ImageToVideo(const StubPtr& stub, const std::shared_ptr<Store>& store,
                  const std::string& owner, const http::Request& req, http::Reply reply) {
  auto p = ReadForm(req, reply);
  if (!p) return;
  auto call = std::make_shared<UnaryCall<v1::ImageToVideoRequest, v1::VideoResponse>>();
  auto& r = call->request;
  if (auto v = p->Str("model_id", true)) r.set_model_id(*v);
  if (auto v = p->File("image", true)) r.set_image(std::move(*v));
  if (auto v = p->Int("height", 1, kMaxInt32)) r.set_height(static_cast<int32_t>(*v));
  if (auto v = p->Int("width", 1, kMaxInt32)) r.set_width(static_cast<int32_t>(*v));
  if (auto v = p->Int("fps", 1, kMaxInt32)) r.set_fps(static_cast<int32_t>(*v));
  if (auto v = p->Int("motion_bucket_id", 0, kMaxInt32)) {
    r.set_motion_bucket_id(static_cast<int32_t>(*v));
  }
  if (auto v = p->Number("noise_aug_strength")) r.set_noise_aug_strength(static_cast<float>(*v));
  if (auto v = p->Bool("safety_check")) r.set_safety_check(*v);
  if (auto v = p->Int("seed", std::numeric_limits<int64_t>::min(),
                      std::numeric_limits<int64_t>::max())) {
    r.set_seed(*v);
  }
  if (auto v = p->Int("num_inference_steps", 1, kMaxInt32)) {
    r.set_num_inference_steps(static_cast<int32_t>(*v));
  }
  if (!p->ok()) return reply(p->Error());
  ForwardRequestId(req, &call->context);
  const std::string base = BaseUrl(req);
  auto videos = [store, base, owner](const v1::VideoResponse& resp) {
    Json images = Json::array();
    int i = 0;
    for (const auto& m : resp.images()) {
      const std::string type = m.content_type().empty() ? "video/mp4" : m.content_type();
      const std::string path =
          store->PutMedia(owner, type, m.data(), absl::StrCat("video-", i++, ".mp4"));
      images.push_back({{"url", base + path}, {"seed", m.seed()}, {"nsfw", m.nsfw()}});
    }
    return Json{{"images", images}};
  };
  auto prefer = Header(req, "prefer");
  if (!prefer || !absl::StrContains(absl::AsciiStrToLower(*prefer), "respond-async")) {
    RunUnary(
        stub, call,
        [stub](auto* c, auto* rq, auto* rs, auto cb) {
          stub->async()->ImageToVideo(c, rq, rs, std::move(cb));
        },
        videos, std::move(reply), ImageInputStatus);
    return;
  }
  const std::string id = store->NewJob(owner);
  stub->async()->ImageToVideo(
      &call->context, &call->request, &call->response,
      [call, store, id, videos](grpc::Status status) {
        if (!status.ok()) {
          return store->FinishJob(id, Json{{"error", {{"msg", status.error_message()}}}});
        }
        store->FinishJob(id, videos(call->response));
      });
  reply(http::Json(202, Json{{"request_id", id}}.dump()));
}

void ImageToVideoResult(const std::shared_ptr<Store>& store, const std::string& owner,
                        const http::Request& req, http::Reply reply) {
  auto p = ReadJson(req, reply);
  if (!p) return;
  auto id = p->Str("request_id", true);
  if (!p->ok()) return reply(p->Error());
  auto status = store->JobStatus(*id, owner);
  if (!status) {
    return reply(
        HttpError(404, absl::StrCat("no image-to-video request '", *id, "' (unknown or expired)")));
  }
  reply(http::Json(200, status->dump(-1, ' ', false, Json::error_handler_t::replace)));
}

void ServeMedia(const std::shared_ptr<Store>& store, const std::string& owner,
                const http::Request& req, http::Reply reply) {
  if (req.method != "GET") return reply(HttpError(405, "use GET"));
  auto media = store->GetMedia(req.path, owner);
  if (!media) return reply(HttpError(404, absl::StrCat("no media at ", req.path)));
  http::Response r;
  r.content_type = media->first;
  r.body = *media->second;
  reply(std::move(r));
}

// Validates the request, checks that some orchestrator offers the model (503 otherwise), starts
// a session (live_video.h) and answers at once with its URLs and request id.
void LiveVideoToVideo(const StubPtr& stub, const std::shared_ptr<LiveVideoSessions>& sessions,
                      const http::Request& req, http::Reply reply) {
  if (sessions == nullptr) return reply(HttpError(503, "live video is not served by this gateway"));
  auto p = ReadJson(req, reply);
  if (!p) return;
  LiveVideoParams lp;
  auto url = [&](const char* name, bool required) -> std::string {
    auto v = p->Str(name, required);
    if (!v || (v->empty() && !required)) return "";
    // Syntax and the egress policy (live_video.allowed_hosts), before any other work.
    if (absl::Status st = sessions->CheckUrl(name, *v); !st.ok()) {
      p->Fail(name, absl::StrCat("Value error, ", st.message()), "value_error");
      return "";
    }
    // The session appends "/<seq>" itself.
    return std::string(absl::StripSuffix(*v, "/"));
  };
  lp.subscribe_url = url("subscribe_url", true);
  lp.publish_url = url("publish_url", true);
  lp.control_url = url("control_url", false);
  lp.events_url = url("events_url", false);
  if (auto v = p->Str("model_id", true)) {
    if (v->empty()) {
      p->Fail("model_id", "Value error, model_id must name a live-video-to-video model",
              "value_error");
    }
    lp.model_id = *v;
  }
  if (const Json* params = p->Raw("params")) {
    if (!params->is_object()) {
      p->Fail("params", "Input should be a valid dictionary", "dict_type");
    } else {
      lp.params = params->dump(-1, ' ', false, Json::error_handler_t::replace);
    }
  }
  std::string gateway_request_id;
  if (auto v = p->Str("gateway_request_id")) gateway_request_id = *v;
  if (auto v = p->Str("manifest_id")) lp.manifest_id = *v;
  if (auto v = p->Str("stream_id")) lp.stream_id = *v;
  if (lp.stream_id.size() > 128) {
    p->Fail("stream_id", "String should have at most 128 characters", "string_too_long");
  }
  if (!p->ok()) return reply(p->Error());
  // Also the stream id when the client names none: 128 bits from the CSPRNG, not guessable.
  lp.request_id = absl::StrCat("live-", SecureRandomHex(16));
  if (lp.stream_id.empty()) lp.stream_id = lp.request_id;
  if (auto auth = Header(req, "authorization")) lp.authorization = *auth;
  // Every string here but the request id is the client's: cut and escaped (LogSafe).
  spdlog::info(
      "[{}] /live-video-to-video model '{}' stream '{}' (gateway_request_id '{}', "
      "manifest_id '{}')",
      lp.request_id, LogSafe(lp.model_id), LogSafe(lp.stream_id), LogSafe(gateway_request_id),
      LogSafe(lp.manifest_id));
  // Capacity first: some orchestrator must offer the model, or the session could never run.
  auto call =
      std::make_shared<UnaryCall<v1::ListCapabilitiesRequest, v1::ListCapabilitiesResponse>>();
  call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  ForwardRequestId(req, &call->context);
  stub->async()->ListCapabilities(
      &call->context, &call->request, &call->response,
      [call, sessions, lp = std::move(lp), reply = std::move(reply)](grpc::Status status) mutable {
        if (!status.ok()) {
          return reply(HttpError(HttpStatusForGrpc(status.error_code()), status.error_message()));
        }
        bool offered = false;
        for (const auto& cap : call->response.capabilities()) {
          offered = offered || (cap.pipeline() == "live-video-to-video" &&
                                cap.model_id() == lp.model_id && cap.orchestrators() > 0);
        }
        if (!offered) {
          return reply(HttpError(
              503, absl::StrCat("no orchestrator available: none offers live-video-to-video "
                                "model '",
                                lp.model_id, "'")));
        }
        Json out = {{"subscribe_url", lp.subscribe_url}, {"publish_url", lp.publish_url},
                    {"control_url", lp.control_url},     {"events_url", lp.events_url},
                    {"request_id", lp.request_id},       {"manifest_id", lp.manifest_id}};
        if (absl::Status st = sessions->Start(std::move(lp)); !st.ok()) {
          return reply(HttpError(HttpStatusForGrpc(static_cast<grpc::StatusCode>(st.code())),
                                 std::string(st.message())));
        }
        reply(http::Json(200, out.dump(-1, ' ', false, Json::error_handler_t::replace)));
      });
}

}  // namespace
}  // namespace livepeer

int HttpStatusForGrpc(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return 200;
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
    case grpc::StatusCode::NOT_FOUND:  // no orchestrator offers the model
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      return 401;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:  // over an API key's quota, or queues full
      return 429;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 503;
    default:
      return 500;
  }
}

std::map<std::string, http::Handler> LivepeerApiRoutes(std::shared_ptr<grpc::Channel> gateway,
                                                       std::shared_ptr<LiveVideoSessions> live,
                                                       const ApiKeyAuth* auth) {
  using livepeer::StubPtr;
  auto stub = StubPtr(v1::Gateway::NewStub(gateway));
  auto store = std::make_shared<livepeer::Store>();
  std::map<std::string, http::Handler> routes;
  auto add = [&](const std::string& path,
                 void (*handler)(const StubPtr&, const http::Request&, http::Reply)) {
    routes[path] = [stub, handler](const http::Request& req, http::Reply reply) {
      handler(stub, req, std::move(reply));
    };
  };
  add("/text-to-image", livepeer::TextToImage);
  add("/image-to-image", livepeer::ImageToImage);
  add("/upscale", livepeer::Upscale);
  add("/segment-anything-2", livepeer::SegmentAnything2);
  add("/audio-to-text", livepeer::AudioToText);
  add("/image-to-text", livepeer::ImageToText);
  add("/text-to-speech", livepeer::TextToSpeech);
  add("/llm", livepeer::Llm);
  // Async results and served videos belong to the API key that made them (OwnerOf).
  routes["/image-to-video"] = [stub, store, auth](const http::Request& req, http::Reply reply) {
    livepeer::ImageToVideo(stub, store, livepeer::OwnerOf(auth, req), req, std::move(reply));
  };
  routes["/image-to-video/result"] = [store, auth](const http::Request& req, http::Reply reply) {
    livepeer::ImageToVideoResult(store, livepeer::OwnerOf(auth, req), req, std::move(reply));
  };
  routes["/stream/*"] = [store, auth](const http::Request& req, http::Reply reply) {
    livepeer::ServeMedia(store, livepeer::OwnerOf(auth, req), req, std::move(reply));
  };
  // Live video-to-video sessions (trickle); without an owner's, the route's own end when the HTTP
  // server and its routes go.
  if (live == nullptr) live = std::make_shared<LiveVideoSessions>(stub);
  routes["/live-video-to-video"] = [stub, live](const http::Request& req, http::Reply reply) {
    livepeer::LiveVideoToVideo(stub, live, req, std::move(reply));
  };
  return routes;
}

}  // namespace switchyard::gateway

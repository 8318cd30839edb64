#include "gateway/livepeer_api.h"

#include <nlohmann/json.hpp>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/multipart.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace {

using Json = nlohmann::json;

http::Response HttpError(int status, const std::string& message) {
  return http::Json(status, Json{{"detail", {{"msg", message}}}}.dump());
}

// FastAPI's validation error shape, as the reference gateway answers 422.
http::Response ValidationError(const std::string& field, const std::string& message,
                               const std::string& type) {
  return http::Json(
      422, Json{{"detail",
                 Json::array(
                     {{{"loc", Json::array({"body", field})}, {"msg", message}, {"type", type}}})}}
               .dump());
}

std::string DataUrl(const v1::Media& media) {
  const std::string type = media.content_type().empty() ? "image/png" : media.content_type();
  return absl::StrCat("data:", type, ";base64,", absl::Base64Escape(media.data()));
}

http::Handler NotYet(const std::string& path) {
  return [path](const http::Request&, http::Reply reply) {
    reply(HttpError(501, absl::StrCat(path,
                                      " is not implemented on this gateway yet; use the "
                                      "gRPC API (switchyard.v1.Gateway)")));
  };
}

void Upscale(const std::shared_ptr<v1::Gateway::Stub>& stub, const http::Request& req,
             http::Reply reply) {
  if (req.method != "POST") return reply(HttpError(405, "use POST"));
  auto ct = req.headers.find("content-type");
  if (ct == req.headers.end() || !absl::StartsWithIgnoreCase(ct->second, "multipart/form-data")) {
    return reply(HttpError(415, "the body must be multipart/form-data"));
  }
  auto form = http::ParseMultipartForm(ct->second, req.body);
  if (!form.ok()) return reply(HttpError(400, std::string(form.status().message())));
  struct Call {
    grpc::ClientContext context;
    v1::UpscaleRequest request;
    v1::ImageResponse response;
  };
  auto call = std::make_shared<Call>();
  auto image = form->find("image");
  if (image == form->end() || image->second.data.empty()) {
    return reply(ValidationError("image", "Field required", "missing"));
  }
  call->request.set_image(std::move(image->second.data));
  if (auto it = form->find("model_id"); it != form->end()) {
    call->request.set_model_id(it->second.data);
  }
  if (auto it = form->find("prompt"); it != form->end()) call->request.set_prompt(it->second.data);
  if (auto it = form->find("safety_check"); it != form->end()) {
    const std::string v = absl::AsciiStrToLower(it->second.data);
    if (v != "true" && v != "false") {
      return reply(
          ValidationError("safety_check", "Input should be a valid boolean", "bool_parsing"));
    }
    call->request.set_safety_check(v == "true");
  }
  if (auto it = form->find("seed"); it != form->end()) {
    int64_t seed = 0;
    if (!absl::SimpleAtoi(it->second.data, &seed)) {
      return reply(ValidationError("seed", "Input should be a valid integer", "int_parsing"));
    }
    call->request.set_seed(seed);
  }
  if (auto it = form->find("num_inference_steps"); it != form->end()) {
    int32_t steps = 0;
    if (!absl::SimpleAtoi(it->second.data, &steps) || steps <= 0) {
      return reply(ValidationError("num_inference_steps", "Input should be a positive integer",
                                   "int_parsing"));
    }
    call->request.set_num_inference_steps(steps);
  }
  if (auto it = req.headers.find("x-request-id"); it != req.headers.end()) {
    call->context.AddMetadata("x-request-id", it->second);
  }
  stub->async()->Upscale(
      &call->context, &call->request, &call->response,
      [call, reply = std::move(reply)](grpc::Status status) {
        if (!status.ok()) {
          return reply(HttpError(HttpStatusForGrpc(status.error_code()), status.error_message()));
        }
        Json images = Json::array();
        for (const auto& m : call->response.images()) {
          images.push_back({{"url", DataUrl(m)}, {"seed", m.seed()}, {"nsfw", m.nsfw()}});
        }
        reply(http::Json(200, Json{{"images", images}}.dump()));
      });
}

}  // namespace

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
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return 503;
    default:
      return 500;
  }
}

std::map<std::string, http::Handler> LivepeerApiRoutes(std::shared_ptr<grpc::Channel> gateway) {
  auto stub = std::shared_ptr<v1::Gateway::Stub>(v1::Gateway::NewStub(gateway));
  std::map<std::string, http::Handler> routes;
  routes["/upscale"] = [stub](const http::Request& req, http::Reply reply) {
    Upscale(stub, req, std::move(reply));
  };
  for (const char* path : {"/text-to-image", "/image-to-image", "/image-to-video", "/audio-to-text",
                           "/segment-anything-2", "/llm", "/image-to-text", "/text-to-speech",
                           "/live-video-to-video"}) {
    routes[path] = NotYet(path);
  }
  return routes;
}

}  // namespace switchyard::gateway

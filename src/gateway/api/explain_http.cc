#include "gateway/api/explain_http.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway {
namespace {

http::Response JsonError(int status, const std::string& message) {
  http::Response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = nlohmann::json{{"error", {{"message", message}}}}.dump();
  if (status == 405) r.headers["Allow"] = "GET";
  return r;
}

int HttpStatusOf(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      return 400;
    case grpc::StatusCode::UNAUTHENTICATED:
      return 401;
    case grpc::StatusCode::PERMISSION_DENIED:
      return 403;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return 429;
    default:
      return 502;
  }
}

// %XX and '+' decoding of one query value; false when malformed.
bool Unescape(absl::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out->push_back(' ');
    } else if (in[i] == '%') {
      int v = 0;
      if (i + 2 >= in.size() || !absl::SimpleHexAtoi(in.substr(i + 1, 2), &v)) return false;
      out->push_back(static_cast<char>(v));
      i += 2;
    } else {
      out->push_back(in[i]);
    }
  }
  return true;
}

}  // namespace

http::Handler ExplainHttpRoute(std::shared_ptr<grpc::Channel> channel) {
  std::shared_ptr<v1::Gateway::Stub> stub = v1::Gateway::NewStub(channel);
  return [stub](const http::Request& req, http::Reply reply) {
    if (req.method != "GET") return reply(JsonError(405, "use GET"));
    struct Call {
      grpc::ClientContext context;
      v1::ExplainRouteRequest request;
      v1::ExplainRouteResponse response;
    };
    auto call = std::make_shared<Call>();
    const size_t q = req.target.find('?');
    if (q != std::string::npos) {
      for (absl::string_view pair : absl::StrSplit(req.target.substr(q + 1), '&')) {
        if (pair.empty()) continue;
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, '=');
        std::string value;
        if (!Unescape(kv.second, &value)) {
          return reply(
              JsonError(400, absl::StrCat("query parameter '", LogSafe(std::string(kv.first)),
                                          "' is not URL-encoded correctly")));
        }
        if (kv.first == "pipeline") {
          call->request.set_pipeline(value);
        } else if (kv.first == "model") {
          call->request.set_model_id(value);
        } else if (kv.first == "max_price") {
          double price = 0;
          if (!absl::SimpleAtod(value, &price) || !std::isfinite(price) || price < 0) {
            return reply(JsonError(
                400, absl::StrCat("max_price must be a number >= 0, got '", LogSafe(value), "'")));
          }
          call->request.set_max_price_per_unit(price);
        } else {
          return reply(JsonError(
              400, absl::StrCat("unknown query parameter '", LogSafe(std::string(kv.first)),
                                "' (pipeline, model, max_price)")));
        }
      }
    }
    for (const char* header : {"authorization", "x-api-key"}) {
      if (auto it = req.headers.find(header); it != req.headers.end()) {
        call->context.AddMetadata(header, it->second);
      }
    }
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stub->async()->ExplainRoute(
        &call->context, &call->request, &call->response,
        [call, reply = std::move(reply)](grpc::Status status) {
          if (!status.ok()) {
            return reply(JsonError(HttpStatusOf(status.error_code()), status.error_message()));
          }
          google::protobuf::util::JsonPrintOptions print;
          print.always_print_primitive_fields = true;
          print.preserve_proto_field_names = true;
          http::Response r;
          r.content_type = "application/json";
          if (!google::protobuf::util::MessageToJsonString(call->response, &r.body, print).ok()) {
            return reply(JsonError(502, "cannot encode the explanation as JSON"));
          }
          reply(std::move(r));
        });
  };
}

}  // namespace switchyard::gateway

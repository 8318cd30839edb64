#include "gateway/billing/usage_http.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>

#include <nlohmann/json.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
    case grpc::StatusCode::FAILED_PRECONDITION:
      return 404;
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

http::Handler UsageHttpRoute(std::shared_ptr<grpc::Channel> channel) {
  std::shared_ptr<v1::Gateway::Stub> stub = v1::Gateway::NewStub(channel);
  return [stub](const http::Request& req, http::Reply reply) {
    if (req.method != "GET") return reply(JsonError(405, "use GET"));
    struct Call {
      grpc::ClientContext context;
      v1::GetUsageRequest request;
      v1::GetUsageResponse response;
    };
    auto call = std::make_shared<Call>();
    const size_t q = req.target.find('?');
    if (q != std::string::npos) {
      for (absl::string_view pair : absl::StrSplit(req.target.substr(q + 1), '&')) {
        if (pair.empty()) continue;
        std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(pair, '=');
        std::string value;
        if (!Unescape(kv.second, &value)) {
          return reply(JsonError(400, absl::StrCat("query parameter '", kv.first,
                                                   "' is not URL-encoded correctly")));
        }
        if (kv.first == "since" || kv.first == "until") {
          int64_t seconds = 0;
          if (!absl::SimpleAtoi(value, &seconds) || seconds < 0) {
            return reply(JsonError(
                400, absl::StrCat(kv.first, " must be Unix seconds (>= 0), got '", value, "'")));
          }
          if (kv.first == "since") call->request.set_since_unix(seconds);
          if (kv.first == "until") call->request.set_until_unix(seconds);
        } else if (kv.first == "api_key_id") {
          call->request.set_api_key_id(value);
        } else {
          return reply(JsonError(400, absl::StrCat("unknown query parameter '", kv.first,
                                                   "' (since, until, api_key_id)")));
        }
      }
    }
    if (auto it = req.headers.find("authorization"); it != req.headers.end()) {
      call->context.AddMetadata("authorization", it->second);
    }
    if (auto it = req.headers.find("x-api-key"); it != req.headers.end()) {
      call->context.AddMetadata("x-api-key", it->second);
    }
    call->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    stub->async()->GetUsage(
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
            return reply(JsonError(502, "cannot encode the usage as JSON"));
          }
          reply(std::move(r));
        });
  };
}

}  // namespace switchyard::gateway

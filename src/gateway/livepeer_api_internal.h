// Pieces shared by the Livepeer AI HTTP API's handlers (livepeer_api*.cc); not a public interface.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "common/http_server.h"
#include "common/multipart.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::gateway::livepeer {

using Json = nlohmann::json;
using StubPtr = std::shared_ptr<v1::Gateway::Stub>;

// {"detail": {"msg": message}}: the spec's HTTPError.
http::Response HttpError(int status, const std::string& message);

// A request's fields, from a multipart form or a JSON object, read with FastAPI's (pydantic's)
// rules and error shapes, as the reference gateway validates them: every problem is collected
// and answered at once as 422 {"detail": [{"loc": ["body", field], "msg", "type"}, ...]}.
class Params {
 public:
  explicit Params(std::map<std::string, http::FormPart> form);
  explicit Params(Json body);

  bool Has(const std::string& name) const;
  // A text field; nullopt when absent (a validation error when `required`) or not a string.
  std::optional<std::string> Str(const std::string& name, bool required = false);
  // An uploaded file's bytes (form bodies only). Empty files count as missing.
  std::optional<std::string> File(const std::string& name, bool required = false);
  std::optional<int64_t> Int(const std::string& name, int64_t min, int64_t max);
  std::optional<double> Number(const std::string& name);
  std::optional<bool> Bool(const std::string& name);
  // The raw JSON value (JSON bodies only), nullptr when absent.
  const Json* Raw(const std::string& name) const;

  // Records a problem with `loc` (after "body").
  void Fail(Json loc, const std::string& msg, const std::string& type);
  // Refuses the whole request as malformed (400 with `message`), e.g. a field's JSON nested past
  // the limit; it takes precedence over the 422 field errors. The first refusal is kept.
  void Refuse(std::string message);
  bool ok() const { return errors_.empty() && refusal_.empty(); }
  http::Response Error() const;

 private:
  bool is_form_;
  std::map<std::string, http::FormPart> form_;
  Json json_;
  Json errors_ = Json::array();
  std::string refusal_;
};

// Checks the method and body type and parses the body. On failure, replies (405, 415, 400 or
// 422) and returns nullopt. JSON bodies nested deeper than kMaxJsonDepth (common/json_limits.h)
// are 400 naming the limit; other malformed JSON is the reference API's 422 json_invalid.
std::optional<Params> ReadForm(const http::Request& req, const http::Reply& reply);
std::optional<Params> ReadJson(const http::Request& req, const http::Reply& reply);

// Refines the HTTP status of a failed gRPC call (e.g. 413 or 415 for what the pipeline says about
// its input); returns 0 to keep the default mapping.
using StatusRefiner = std::function<int(const grpc::Status&)>;

// Answers a failed call: HttpStatusForGrpc's code (or the refiner's) with the spec's error body.
// NOT_FOUND ("no orchestrator offers model ...") is 400 while the gateway knows orchestrators and
// 503 when it has none to route to at all, which it asks its own ListCapabilities.
void ReplyGrpcError(const StubPtr& stub, const grpc::Status& status, http::Reply reply,
                    const StatusRefiner& refine = nullptr);

// 413 for an input image over the model's pixel limit (the spec lists 413 for image inputs).
int ImageInputStatus(const grpc::Status& status);

// Sends the client's X-Request-Id, if it sent one, with the call so every log line has it, and
// its Authorization header, so the gRPC API's API key check covers HTTP calls too.
void ForwardRequestId(const http::Request& req, grpc::ClientContext* context);

// "data:<type>;base64,<data>".
std::string DataUrl(const std::string& content_type, const std::string& data);

// Runs a unary call and answers with `to_json(response)` (200) or the error.
template <typename Call, typename Start, typename ToJson>
void RunUnary(const StubPtr& stub, const std::shared_ptr<Call>& call, Start start, ToJson to_json,
              http::Reply reply, StatusRefiner refine = nullptr) {
  start(&call->context, &call->request, &call->response,
        [stub, call, to_json, reply = std::move(reply), refine](grpc::Status status) {
          if (!status.ok()) return ReplyGrpcError(stub, status, reply, refine);
          reply(http::Json(
              200, to_json(call->response).dump(-1, ' ', false, Json::error_handler_t::replace)));
        });
}

template <typename Req, typename Resp>
struct UnaryCall {
  grpc::ClientContext context;
  Req request;
  Resp response;
};

// Handlers of the text and audio paths (livepeer_api_text.cc).
void AudioToText(const StubPtr& stub, const http::Request& req, http::Reply reply);
void ImageToText(const StubPtr& stub, const http::Request& req, http::Reply reply);
void TextToSpeech(const StubPtr& stub, const http::Request& req, http::Reply reply);
void Llm(const StubPtr& stub, const http::Request& req, http::Reply reply);

}  // namespace switchyard::gateway::livepeer

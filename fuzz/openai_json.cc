// Fuzzes the OpenAI-compatible HTTP API's request handling (gateway::OpenAiApiRoutes): each
// handler reads its JSON body, checks the fields with OpenAI's rules and this gateway's limits and
// either answers the error or calls the gateway's gRPC API. Here that API is an in-process gRPC
// server whose methods are all UNIMPLEMENTED, so every request that validates ends as an error
// reply too, without any routing or model.
// Input, as livepeer_json's: "METHOD PATH\n", header lines "name: value\n", an empty line, then
// the body (a first line without a space is a path, method POST).
// Every request must be answered, within 10 s, with a 1xx..5xx status; JSON replies must be valid
// JSON and errors in OpenAI's shape ({"error": {"message", "type", "param", "code"}}). A handler
// that throws is a finding. A JSON body nested deeper than kMaxJsonDepth must be 400 naming the
// limit.
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/http_server.h"
#include "common/json_limits.h"
#include "fuzz/fuzz_util.h"
#include "gateway/api/openai_api.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace {

namespace http = switchyard::http;

struct Harness {
  switchyard::v1::Gateway::CallbackService service;  // every method UNIMPLEMENTED
  std::unique_ptr<grpc::Server> server;
  std::map<std::string, http::Handler> routes;
};

Harness& GetHarness() {
  static Harness* harness = [] {
    auto* h = new Harness;
    grpc::ServerBuilder builder;
    builder.RegisterService(&h->service);
    h->server = builder.BuildAndStart();
    SWITCHYARD_FUZZ_CHECK(h->server != nullptr, "in-process gRPC server did not start");
    h->routes =
        switchyard::gateway::OpenAiApiRoutes(h->server->InProcessChannel(grpc::ChannelArguments()));
    return h;
  }();
  return *harness;
}

// Exact path, else the longest "prefix*" route, as http::Server routes.
const http::Handler* FindRoute(const std::map<std::string, http::Handler>& routes,
                               const std::string& path) {
  if (auto it = routes.find(path); it != routes.end()) return &it->second;
  const http::Handler* best = nullptr;
  size_t best_len = 0;
  for (const auto& [key, handler] : routes) {
    if (key.empty() || key.back() != '*') continue;
    const size_t len = key.size() - 1;
    if (path.compare(0, len, key, 0, len) == 0 && (best == nullptr || len > best_len)) {
      best = &handler;
      best_len = len;
    }
  }
  return best;
}

http::Request ParseInput(std::string_view in) {
  http::Request req;
  auto [line, rest] = switchyard::fuzz::SplitFirstLine(in);
  const size_t space = line.find(' ');
  if (space == std::string_view::npos) {
    req.method = "POST";
    req.target = std::string(line);
  } else {
    req.method = std::string(line.substr(0, space));
    req.target = std::string(line.substr(space + 1));
  }
  req.path = req.target.substr(0, req.target.find('?'));
  while (!rest.empty()) {
    auto [header, after] = switchyard::fuzz::SplitFirstLine(rest);
    rest = after;
    if (header.empty()) break;
    const size_t colon = header.find(':');
    if (colon == std::string_view::npos) continue;
    std::string value(header.substr(colon + 1));
    absl::StripAsciiWhitespace(&value);
    req.headers[absl::AsciiStrToLower(std::string(header.substr(0, colon)))] = std::move(value);
  }
  req.body = std::string(rest);
  return req;
}

struct Answer {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<http::Response> response;
  int replies = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness& h = GetHarness();
  const http::Request req = ParseInput(switchyard::fuzz::AsView(data, size));
  const http::Handler* handler = FindRoute(h.routes, req.path);
  if (handler == nullptr) return 0;  // http::Server answers 404 itself
  auto answer = std::make_shared<Answer>();
  try {
    (*handler)(req, [answer](http::Response r) {
      std::lock_guard<std::mutex> lock(answer->mu);
      if (++answer->replies == 1) answer->response = std::move(r);
      answer->cv.notify_all();
    });
  } catch (const std::exception& e) {
    SWITCHYARD_FUZZ_CHECK(false, std::string("the handler threw: ") + e.what());
  }
  std::unique_lock<std::mutex> lock(answer->mu);
  SWITCHYARD_FUZZ_CHECK(answer->cv.wait_for(lock, std::chrono::seconds(10),
                                            [&] { return answer->response.has_value(); }),
                        "no reply within 10 s: the client would hang");
  const http::Response& r = *answer->response;
  SWITCHYARD_FUZZ_CHECK(r.status >= 100 && r.status <= 599, "bad HTTP status");
  const auto ct = req.headers.find("content-type");
  if (req.method == "POST" && ct != req.headers.end() &&
      absl::StartsWithIgnoreCase(ct->second, "application/json") &&
      (req.path == "/v1/chat/completions" || req.path == "/v1/completions") &&
      !switchyard::CheckJsonDepth(req.body).ok()) {
    SWITCHYARD_FUZZ_CHECK(r.status == 400 && r.body.find("nested deeper than") != std::string::npos,
                          "a JSON body past the depth limit was not refused with 400 naming it: " +
                              std::to_string(r.status) + " " + r.body.substr(0, 200));
  }
  if (r.stream == nullptr && absl::StartsWith(r.content_type, "application/json")) {
    auto json = nlohmann::json::parse(r.body, nullptr, /*allow_exceptions=*/false);
    SWITCHYARD_FUZZ_CHECK(!json.is_discarded(), "a JSON reply that is not JSON: " + r.body);
    if (r.status >= 400) {
      SWITCHYARD_FUZZ_CHECK(json.is_object() && json.contains("error") &&
                                json["error"].is_object() &&
                                json["error"].value("message", nlohmann::json()).is_string() &&
                                json["error"].value("type", nlohmann::json()).is_string() &&
                                json["error"].contains("param") && json["error"].contains("code"),
                            "an error reply not in OpenAI's shape: " + r.body);
    }
  }
  return 0;
}

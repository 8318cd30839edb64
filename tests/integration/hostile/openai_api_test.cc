// Hostile clients of the gateway's OpenAI-compatible HTTP API (issue 21): without a key, a huge
// announced body gets 401 in OpenAI's error shape from the headers alone; with the key, a burst of
// malformed and oversized bodies is refused, each with its 400, and the gateway keeps serving
// another client's chat completion.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/billing/api_keys.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr char kKey[] = "sy_hostile_openai_test_key_0123456789abcdef0123456789abcdef";

// Sends `request` on a fresh loopback connection and reads until the server closes (bounded: a
// 10 s receive timeout, at most 1 MiB).
std::string RawExchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
          static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (int i = 0; i < 256 && out.size() < (1 << 20); ++i) {
      const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

TEST(HostileOpenAiTest, KeylessHugeBodiesAndMalformedBurstsLeaveTheGatewayServing) {
  TempDir tmp;
  WriteFile(tmp.path() / "keys.json",
            Json{{"keys", {{{"id", "app"}, {"sha256", gateway::Sha256Hex(kKey)}}}}}.dump());
  SaveScriptModule(tmp.path() / "llm.pt", kTinyLlmSource, TinyLlmAttributes(0, kTinyLlmReply));
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {};
  options.extra_models = {{{"id", "tiny-llm"},
                           {"pipeline", "llm"},
                           {"path", (tmp.path() / "llm.pt").string()},
                           {"warm", true},
                           {"device", "cpu"},
                           {"options", {{"max_tokens", 512}}}}};
  options.gateway_config = {{"api_keys_file", (tmp.path() / "keys.json").string()}};
  options.api_key = kKey;
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int port = cluster.gateway().http_port();

  // No key, a 200 MB body announced and a few bytes sent: 401 at once, in OpenAI's shape.
  for (const char* path : {"/v1/chat/completions", "/v1/completions", "/v1/models"}) {
    const auto start = Clock::now();
    const std::string answer =
        RawExchange(port, absl::StrCat("POST ", path,
                                       " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                       "Content-Length: 209715200\r\n\r\n{\"model\":"));
    EXPECT_EQ(answer.rfind("HTTP/1.1 401", 0), 0u) << path << ": " << answer;
    EXPECT_TRUE(absl::StrContains(answer, R"("code":"invalid_api_key")")) << answer;
    EXPECT_TRUE(absl::StrContains(answer, R"("type":"invalid_request_error")")) << answer;
    EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 5.0) << path;
  }

  // With the key: a burst of hostile bodies, each refused with 400 and a message.
  const std::string ok_messages = R"([{"role":"user","content":"Hi"}])";
  Json many = Json::array();
  for (int i = 0; i < 5000; ++i) many.push_back({{"role", "user"}, {"content", "x"}});
  const std::vector<std::string> bodies = {
      absl::StrCat(R"({"model":"tiny-llm","messages":)", std::string(500000, '['),
                   std::string(500000, ']'), "}"),
      absl::StrCat(R"({"model":"tiny-llm","messages":)", many.dump(), "}"),
      absl::StrCat(R"({"model":"tiny-llm","n":2,"messages":)", ok_messages, "}"),
      absl::StrCat(R"({"model":"tiny-llm","stop":["a","b","c","d","e"],"messages":)", ok_messages,
                   "}"),
      absl::StrCat(R"({"model":{"$gt":""},"messages":)", ok_messages, "}"),
      absl::StrCat(R"({"model":"tiny-llm","max_tokens":-1,"messages":)", ok_messages, "}"),
      absl::StrCat(R"({"model":"tiny-llm","messages":)", ok_messages, R"(,"tools":[{}]})"),
      R"({"model":"tiny-llm","messages":[{"role":"user","content":[{"type":"image_url"}]}]})",
      std::string(100000, '{'),
      "\xff\xfe not json",
  };
  for (const std::string& body : bodies) {
    HttpCall call;
    call.method = "POST";
    call.path = "/v1/chat/completions";
    call.content_type = "application/json";
    call.body = body;
    call.headers["Authorization"] = absl::StrCat("Bearer ", kKey);
    HttpResult r = HttpRequest(port, call);
    Json j = Json::parse(r.body, nullptr, false);
    EXPECT_EQ(r.status, 400) << body.substr(0, 80) << ": " << r.body.substr(0, 300);
    EXPECT_TRUE(!j.is_discarded() && j["error"]["message"].is_string()) << r.body.substr(0, 300);
  }

  // Still alive, and another client's chat completion is served.
  EXPECT_TRUE(cluster.gateway().Alive());
  HttpCall good;
  good.method = "POST";
  good.path = "/v1/chat/completions";
  good.content_type = "application/json";
  good.body = absl::StrCat(R"({"model":"tiny-llm","temperature":0,"messages":)", ok_messages, "}");
  good.headers["Authorization"] = absl::StrCat("Bearer ", kKey);
  HttpResult r = HttpRequest(port, good);
  ASSERT_EQ(r.status, 200) << r.body << cluster.Logs();
  EXPECT_EQ(Json::parse(r.body)["choices"][0]["message"]["content"], kTinyLlmReply);
}

}  // namespace
}  // namespace switchyard::testing

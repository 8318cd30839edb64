// The Livepeer AI HTTP API on the gateway's HTTP port, against a local cluster.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/escaping.h"
#include "common/media/image_codec.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

const char kBoundary[] = "switchyard-test-boundary";

std::string Multipart(const std::map<std::string, std::string>& fields, const std::string& image) {
  std::string body;
  for (const auto& [name, value] : fields) {
    body += std::string("--") + kBoundary + "\r\nContent-Disposition: form-data; name=\"" + name +
            "\"\r\n\r\n" + value + "\r\n";
  }
  if (!image.empty()) {
    body += std::string("--") + kBoundary +
            "\r\nContent-Disposition: form-data; name=\"image\"; filename=\"in.png\"\r\n"
            "Content-Type: image/png\r\n\r\n" +
            image + "\r\n";
  }
  body += std::string("--") + kBoundary + "--\r\n";
  return body;
}

TEST(LivepeerApiTest, UpscaleOverHttpLikeTheLivepeerGateway) {
  ASSERT_TRUE(std::filesystem::exists(ModelDir() / "esrgan-slim-x4.pt"))
      << "models are not prepared; run scripts/prepare-models";
  ClusterOptions options;
  options.orchestrators = 1;
  options.models = {"esrgan-slim-x4"};
  LocalCluster cluster;
  auto st = cluster.Start(options);
  ASSERT_TRUE(st.ok()) << st;
  const int port = cluster.gateway().http_port();
  TempDir tmp;
  const std::string png = MakeTestImage(tmp, 24, 16, "png");
  const std::string form_type = std::string("multipart/form-data; boundary=") + kBoundary;

  HttpResult ok = HttpRequest(port, "POST", "/upscale", form_type,
                              Multipart({{"model_id", "esrgan-slim-x4"}, {"seed", "7"}}, png));
  ASSERT_EQ(ok.status, 200) << ok.body << cluster.Logs();
  auto json = nlohmann::json::parse(ok.body, nullptr, false);
  ASSERT_FALSE(json.is_discarded()) << ok.body;
  ASSERT_EQ(json["images"].size(), 1u) << ok.body;
  const std::string url = json["images"][0]["url"];
  const std::string prefix = "data:image/png;base64,";
  ASSERT_EQ(url.rfind(prefix, 0), 0u) << url.substr(0, 40);
  std::string decoded_png;
  ASSERT_TRUE(absl::Base64Unescape(url.substr(prefix.size()), &decoded_png));
  auto image = media::DecodeImage(decoded_png, 1 << 24);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 96);
  EXPECT_EQ(image->height, 64);
  EXPECT_TRUE(json["images"][0].contains("seed"));
  EXPECT_EQ(json["images"][0]["nsfw"], false);

  // The reference API's errors: 422 for a missing field, 415 for a non-form body, 400 for an
  // unknown model or a corrupt image, 405 for the wrong method, 404 off the API.
  HttpResult missing = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "esrgan-slim-x4"}}, ""));
  EXPECT_EQ(missing.status, 422) << missing.body;
  auto mj = nlohmann::json::parse(missing.body, nullptr, false);
  ASSERT_FALSE(mj.is_discarded()) << missing.body;
  EXPECT_EQ(mj["detail"][0]["loc"], nlohmann::json::array({"body", "image"})) << missing.body;
  EXPECT_EQ(HttpRequest(port, "POST", "/upscale", "application/json", "{}").status, 415);
  HttpResult unknown = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "no-such-model"}}, png));
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_NE(unknown.body.find("no-such-model"), std::string::npos) << unknown.body;
  HttpResult corrupt = HttpRequest(port, "POST", "/upscale", form_type,
                                   Multipart({{"model_id", "esrgan-slim-x4"}}, "not a png"));
  EXPECT_EQ(corrupt.status, 400) << corrupt.body;
  auto cj = nlohmann::json::parse(corrupt.body, nullptr, false);
  ASSERT_FALSE(cj.is_discarded());
  EXPECT_TRUE(cj["detail"].contains("msg")) << corrupt.body;
  EXPECT_EQ(HttpRequest(port, "GET", "/upscale", "", "").status, 405);
  HttpResult bad_seed =
      HttpRequest(port, "POST", "/upscale", form_type,
                  Multipart({{"model_id", "esrgan-slim-x4"}, {"seed", "x"}}, png));
  EXPECT_EQ(bad_seed.status, 422) << bad_seed.body;
  // Not built yet: says so.
  EXPECT_EQ(HttpRequest(port, "POST", "/text-to-image", "application/json", "{}").status, 501);
}

}  // namespace
}  // namespace switchyard::testing

// Quotes and x-max-total-price (issue 23; docs/metering.md, "Quotes") on a loopback cluster of
// the real daemons with tiny TorchScript models made here: Gateway.Quote per pipeline, the price
// of the node the router favours, a job run with x-max-total-price = the quote's total costing
// exactly that in the ledger, a cap below it refused with nothing charged, POST /quote/<pipeline>
// (and hostile bodies), and `switchyard quote`.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "support/cluster.h"
#include "support/http_client.h"
#include "support/media_fixtures.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;

constexpr double kCheap = 0.000001;  // per pixel, on "orch-1"
constexpr double kDear = 0.00001;    // the same models on "dear"
constexpr const char* kUpscaler = "up-identity";
constexpr const char* kLive = "live-identity";  // live-video-to-video, frames as they come
const char kBoundary[] = "quote-test-boundary";

// A price as the client sends it: every digit, so it reads back as the same double.
std::string Exactly(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& key,
                                         const std::map<std::string, std::string>& md = {}) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!key.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  for (const auto& [k, v] : md) ctx->AddMetadata(k, v);
  return ctx;
}

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

class QuoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nlohmann::json keys = {{"keys", nlohmann::json::array()}};
    keys["keys"].push_back(NewApiKeyEntry("alice", &alice_));
    WriteFile(tmp_.path() / "keys.json", keys.dump());
    // An upscaler that returns its input (x1): units are the input's pixels either way.
    SaveScriptModule(tmp_.path() / "identity.pt", "def forward(self, x):\n    return x\n");
    models_ = nlohmann::json::array();
    for (nlohmann::json m : SaveTinyModels(tmp_.path())) {
      const std::string id = m["id"];
      if (id != "t2i-test" && id != "tiny-llm" && id != "tiny-tts") continue;
      models_.push_back(m);
    }
    SaveScriptModule(tmp_.path() / "live-identity.pt",
                     "def forward(self, frame, params: str):\n    return frame\n");
    models_.push_back({{"id", kLive},
                       {"pipeline", "live-video-to-video"},
                       {"path", (tmp_.path() / "live-identity.pt").string()},
                       {"warm", true},
                       {"device", "cpu"},
                       {"options", {{"preset", "ultrafast"}}}});
    models_.push_back({{"id", kUpscaler},
                       {"pipeline", "upscale"},
                       {"path", (tmp_.path() / "identity.pt").string()},
                       {"warm", true},
                       {"device", "cpu"},
                       {"warmup_size", 0}});
    ClusterOptions options;
    options.orchestrators = 1;  // "orch-1", the cheap one
    options.models = {};
    options.extra_models = Priced(kCheap);
    options.api_key = alice_;
    options.orchestrator_config = OrchestratorConfig();
    options.gateway_config = {{"usage_ledger", (tmp_.path() / "usage.db").string()},
                              {"api_keys_file", (tmp_.path() / "keys.json").string()}};
    auto st = cluster_.Start(options);
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    stub_ = cluster_.GatewayStub();
  }

  virtual nlohmann::json OrchestratorConfig() const { return nlohmann::json::object(); }

  std::vector<nlohmann::json> Priced(double price) const {
    std::vector<nlohmann::json> out;
    for (nlohmann::json m : models_) {
      m["price_per_unit"] = price;
      out.push_back(m);
    }
    return out;
  }

  // The dear node: the same models at 10x the price.
  void AddDearNode() {
    auto st = cluster_.AddOrchestrator("dear", {{"models", Priced(kDear)}});
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
    st = cluster_.WaitForOrchestrators(2, std::chrono::seconds(30));
    ASSERT_TRUE(st.ok()) << st << "\n" << cluster_.Logs();
  }

  grpc::Status Quote(const v1::QuoteRequest& req, v1::QuoteResponse* resp,
                     const std::map<std::string, std::string>& md = {}) {
    auto ctx = Ctx(alice_, md);
    return stub_->Quote(ctx.get(), req, resp);
  }

  v1::UpscaleRequest UpscaleReq() {
    v1::UpscaleRequest req;
    req.set_model_id(kUpscaler);
    req.set_image(MakeTestImage(tmp_, 24, 16, "png"));
    return req;
  }

  std::vector<v1::UsageRow> Rows() {
    v1::ListUsageRowsRequest req;
    v1::ListUsageRowsResponse resp;
    auto ctx = Ctx(alice_);
    grpc::Status st = stub_->ListUsageRows(ctx.get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return {resp.rows().begin(), resp.rows().end()};
  }

  TempDir tmp_;
  std::string alice_;
  nlohmann::json models_;
  LocalCluster cluster_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
};

TEST_F(QuoteTest, UpscaleRunWithTheQuotedTotalCostsExactlyThatAndACapBelowIsRefused) {
  v1::QuoteRequest q;
  *q.mutable_upscale() = UpscaleReq();
  v1::QuoteResponse quote;
  grpc::Status st = Quote(q, &quote);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(quote.pipeline(), "upscale");
  EXPECT_EQ(quote.model_id(), kUpscaler);
  EXPECT_EQ(quote.unit(), "pixel");
  EXPECT_EQ(quote.units(), 24 * 16);
  EXPECT_EQ(quote.units_basis(), "exact");
  EXPECT_TRUE(quote.units_exact());
  EXPECT_EQ(quote.orchestrator(), "orch-1");
  EXPECT_DOUBLE_EQ(quote.price_per_unit(), kCheap);
  ASSERT_TRUE(quote.has_total());
  EXPECT_EQ(quote.total(), 24 * 16 * kCheap);
  EXPECT_EQ(quote.eligible(), 1);
  EXPECT_GT(quote.quoted_unix_ms(), 0);
  EXPECT_TRUE(Rows().empty());  // a quote runs nothing

  // Run with x-max-total-price = the quote's total: it runs, and the ledger row is that amount.
  v1::ImageResponse resp;
  auto ctx = Ctx(alice_, {{"x-max-total-price", Exactly(quote.total())}});
  st = stub_->Upscale(ctx.get(), UpscaleReq(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(resp.job().units(), quote.units());
  auto rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_FALSE(rows[0].disputed()) << rows[0].dispute();
  EXPECT_EQ(rows[0].units(), quote.units());
  EXPECT_EQ(rows[0].amount(), quote.total());
  EXPECT_LE(rows[0].amount(), quote.total());

  // A cap below it: no node qualifies. NOT_FOUND, the price cap's error, naming the total; nothing
  // charged.
  ctx = Ctx(alice_, {{"x-max-total-price", Exactly(quote.total() / 2)}});
  resp.Clear();
  st = stub_->Upscale(ctx.get(), UpscaleReq(), &resp);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "price cap")) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "x-max-total-price")) << st.error_message();
  EXPECT_EQ(Rows().size(), 1u);
  // The quote says the same under that cap.
  quote.Clear();
  st = Quote(q, &quote, {{"x-max-total-price", Exactly(24 * 16 * kCheap / 2)}});
  EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << st.error_message();

  // Bad values: INVALID_ARGUMENT naming the header, for jobs and quotes alike.
  for (const char* bad : {"abc", "0", "-1", "nan", "inf", "1e300"}) {
    ctx = Ctx(alice_, {{"x-max-total-price", bad}});
    st = stub_->Upscale(ctx.get(), UpscaleReq(), &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_TRUE(absl::StrContains(st.error_message(), "x-max-total-price")) << st.error_message();
    st = Quote(q, &quote, {{"x-max-total-price", bad}});
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
  }
  EXPECT_EQ(Rows().size(), 1u);
}

// A node that reports more units than the gateway counts (test_inflate_units) under an
// x-max-total-price: disputed and unpaid as always; the client still gets its result.
class InflatingQuoteTest : public QuoteTest {
 protected:
  nlohmann::json OrchestratorConfig() const override { return {{"test_inflate_units", 1000}}; }
};

TEST_F(InflatingQuoteTest, MoreUnitsThanQuotedAreDisputedAndNothingIsCharged) {
  v1::QuoteRequest q;
  *q.mutable_upscale() = UpscaleReq();
  v1::QuoteResponse quote;
  ASSERT_TRUE(Quote(q, &quote).ok());
  ASSERT_TRUE(quote.has_total());
  v1::ImageResponse resp;
  auto ctx = Ctx(alice_, {{"x-max-total-price", Exactly(quote.total())}});
  grpc::Status st = stub_->Upscale(ctx.get(), UpscaleReq(), &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(resp.job().units(), quote.units() + 1000);  // what the node claims
  auto rows = Rows();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_TRUE(rows[0].disputed());
  EXPECT_TRUE(absl::StrContains(rows[0].dispute(), "units")) << rows[0].dispute();
  EXPECT_EQ(rows[0].units(), quote.units());  // the gateway's count
  EXPECT_EQ(rows[0].amount(), 0);
}

TEST_F(QuoteTest, QuotePicksTheFavouriteAndMaxTotalPriceRoutesToANodeUnderIt) {
  AddDearNode();
  if (HasFatalFailure()) return;
  v1::QuoteRequest q;
  *q.mutable_upscale() = UpscaleReq();
  v1::QuoteResponse quote;
  ASSERT_TRUE(Quote(q, &quote).ok());
  EXPECT_EQ(quote.eligible(), 2);
  EXPECT_DOUBLE_EQ(quote.min_price_per_unit(), kCheap);
  EXPECT_DOUBLE_EQ(quote.max_price_per_unit(), kDear);
  // With the cheap total as the cap only the cheap node is eligible: every job goes there.
  const double cheap_total = 24 * 16 * kCheap;
  quote.Clear();
  ASSERT_TRUE(Quote(q, &quote, {{"x-max-total-price", Exactly(cheap_total)}}).ok());
  EXPECT_EQ(quote.eligible(), 1);
  EXPECT_EQ(quote.orchestrator(), "orch-1");
  EXPECT_EQ(quote.total(), cheap_total);
  EXPECT_GT(quote.price_cap_per_unit(), 0);
  EXPECT_LE(quote.units() * quote.price_cap_per_unit(), cheap_total);
  for (int i = 0; i < 4; ++i) {
    v1::ImageResponse resp;
    auto ctx = Ctx(alice_, {{"x-max-total-price", Exactly(cheap_total)}});
    grpc::Status st = stub_->Upscale(ctx.get(), UpscaleReq(), &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.job().orchestrator(), "orch-1");
  }
  for (const auto& row : Rows()) EXPECT_LE(row.amount(), cheap_total) << row.job_id();
  // x-max-price-per-unit and x-max-total-price together: the lower cap wins.
  quote.Clear();
  ASSERT_TRUE(
      Quote(q, &quote, {{"x-max-total-price", "1000"}, {"x-max-price-per-unit", Exactly(kCheap)}})
          .ok());
  EXPECT_DOUBLE_EQ(quote.price_cap_per_unit(), kCheap);
  EXPECT_EQ(quote.eligible(), 1);
}

TEST_F(QuoteTest, QuotesPerPipeline) {
  // text-to-image with a size: exact, and the job's metered units are the quote's.
  v1::QuoteRequest q;
  auto* t2i = q.mutable_text_to_image();
  t2i->set_model_id("t2i-test");
  t2i->set_prompt("a | b");
  t2i->set_width(64);
  t2i->set_height(32);
  v1::QuoteResponse quote;
  grpc::Status st = Quote(q, &quote);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(quote.units(), 2 * 64 * 32);
  EXPECT_TRUE(quote.units_exact());
  v1::ImageResponse images;
  auto ctx = Ctx(alice_, {{"x-max-total-price", Exactly(quote.total())}});
  st = stub_->TextToImage(ctx.get(), *t2i, &images);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(images.job().units(), quote.units());

  // llm: an estimate from max_tokens and the prompt's bytes, at least what the job bills.
  q.Clear();
  auto* llm = q.mutable_llm();
  llm->set_model("tiny-llm");
  llm->set_max_tokens(40);
  auto* m = llm->add_messages();
  m->set_role("user");
  m->set_content("hi there");
  quote.Clear();
  st = Quote(q, &quote);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(quote.unit(), "token");
  EXPECT_EQ(quote.units_basis(), "estimate");
  EXPECT_EQ(quote.units(), 40 + 32 + 8 + 4 + 8);
  ctx = Ctx(alice_, {{"x-max-total-price", Exactly(quote.total())}});
  auto reader = stub_->LLM(ctx.get(), *llm);
  v1::LLMResponse msg, last;
  while (reader->Read(&msg)) last = msg;
  st = reader->Finish();
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_LE(last.job().units(), quote.units());

  // text-to-speech: the price, no total; a total cap cannot be honoured.
  q.Clear();
  q.mutable_text_to_speech()->set_model_id("tiny-tts");
  q.mutable_text_to_speech()->set_text("hello");
  quote.Clear();
  st = Quote(q, &quote);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(quote.units_basis(), "unknown");
  EXPECT_FALSE(quote.has_total());
  EXPECT_DOUBLE_EQ(quote.price_per_unit(), kCheap);
  v1::AudioResponse audio;
  ctx = Ctx(alice_, {{"x-max-total-price", "1"}});
  st = stub_->TextToSpeech(ctx.get(), q.text_to_speech(), &audio);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();

  // Every ledger row is within the total its job was sent with.
  for (const auto& row : Rows()) EXPECT_FALSE(row.disputed()) << row.job_id();

  // Refusals: no request, no model, a model nobody offers, unreadable media, no key.
  q.Clear();
  EXPECT_EQ(Quote(q, &quote).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  *q.mutable_upscale() = UpscaleReq();
  q.mutable_upscale()->clear_model_id();
  EXPECT_EQ(Quote(q, &quote).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  q.mutable_upscale()->set_model_id("nobody-has-this");
  EXPECT_EQ(Quote(q, &quote).error_code(), grpc::StatusCode::NOT_FOUND);
  q.mutable_upscale()->set_model_id(kUpscaler);
  q.mutable_upscale()->set_image("not an image");
  st = Quote(q, &quote);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "image")) << st.error_message();
  auto anonymous = Ctx("");
  EXPECT_EQ(stub_->Quote(anonymous.get(), q, &quote).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(QuoteTest, HttpQuoteAndHostileBodies) {
  const int port = cluster_.gateway().http_port();
  const std::string form = std::string("multipart/form-data; boundary=") + kBoundary;
  const std::string png = MakeTestImage(tmp_, 24, 16, "png");
  HttpCall call;
  call.method = "POST";
  call.path = "/quote/upscale";
  call.content_type = form;
  call.body = Multipart({{"model_id", kUpscaler}}, png);
  call.headers["authorization"] = absl::StrCat("Bearer ", alice_);
  HttpResult r = HttpRequest(port, call);
  ASSERT_EQ(r.status, 200) << r.body;
  auto json = nlohmann::json::parse(r.body, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.body;
  EXPECT_EQ(json["units"], "384");  // int64 as a string (proto JSON)
  EXPECT_EQ(json["units_basis"], "exact");
  EXPECT_DOUBLE_EQ(json["total"].get<double>(), 24 * 16 * kCheap);
  const double total = json["total"].get<double>();

  // The pipeline's own path takes the header too: a total below the quote is refused.
  call.path = "/upscale";
  call.headers["x-max-total-price"] = Exactly(total / 2);
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "x-max-total-price")) << r.body;
  call.headers["x-max-total-price"] = "lots";
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  call.headers["x-max-total-price"] = Exactly(total);
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 200) << r.body;
  call.headers.erase("x-max-total-price");

  // JSON pipelines: the same body as their path.
  HttpCall t2i = call;
  t2i.path = "/quote/text-to-image";
  t2i.content_type = "application/json";
  t2i.body = R"({"model_id": "t2i-test", "prompt": "x", "width": 64, "height": 32})";
  r = HttpRequest(port, t2i);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["units"], "2048");
  HttpCall llm = t2i;
  llm.path = "/quote/llm";
  llm.body = R"({"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}],
                 "max_tokens": 8, "stream": true})";
  r = HttpRequest(port, llm);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["unit"], "token");

  // Hostile or wrong requests.
  HttpCall bad = call;
  bad.path = "/quote/upscale";
  bad.content_type = "application/json";
  bad.body = "{}";
  EXPECT_EQ(HttpRequest(port, bad).status, 415);  // wrong content type
  bad = call;
  bad.path = "/quote/upscale";
  bad.body = Multipart({}, png);
  r = HttpRequest(port, bad);
  EXPECT_EQ(r.status, 422) << r.body;  // missing model
  EXPECT_TRUE(absl::StrContains(r.body, "model_id")) << r.body;
  bad.body = Multipart({{"model_id", kUpscaler}}, "not a png");
  r = HttpRequest(port, bad);
  EXPECT_EQ(r.status, 400) << r.body;  // bad image bytes
  bad.path = "/quote/no-such-pipeline";
  r = HttpRequest(port, bad);
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "upscale")) << r.body;
  bad.path = "/quote";
  EXPECT_EQ(HttpRequest(port, bad).status, 404);
  bad.path = "/quote/upscale";
  bad.method = "GET";
  bad.body.clear();
  EXPECT_EQ(HttpRequest(port, bad).status, 405);
  bad = call;
  bad.path = "/quote/upscale";
  bad.content_length = size_t{1} << 40;  // announced far over the body limit
  bad.body = "x";
  r = HttpRequest(port, bad);
  EXPECT_EQ(r.status, 413) << r.body;
  bad = call;
  bad.path = "/quote/upscale";
  bad.headers.erase("authorization");
  EXPECT_EQ(HttpRequest(port, bad).status, 401);
  // The gateway still serves.
  EXPECT_EQ(HttpRequest(port, call.method, "/quote/upscale", form, call.body).status, 401);
  EXPECT_EQ(HttpRequest(port, call).status, 200);
}

// POST /quote/live-video-to-video: a sample segment (multipart `video`, as a session's input
// sends them) is quoted as the session's segment call for it: units are the segment's frames x
// its frame size, at the cheap node's price, under the caps the headers give; the segment run
// with the quoted total costs at most that.
TEST_F(QuoteTest, HttpLiveVideoQuoteIsTheSegmentsFramesTimesItsFrameSize) {
  SegmentSpec spec;
  spec.width = 96;
  spec.height = 64;
  spec.fps = "10";
  spec.seconds = 1.0;
  spec.gop_seconds = 1.0;
  const std::string segment = MakeTestSegment(tmp_, spec);
  ASSERT_FALSE(segment.empty());
  const ProbeResult probe = ProbeVideo(tmp_, segment, "ts");  // ffprobe decodes every frame
  ASSERT_TRUE(probe.ok) << probe.error;
  ASSERT_EQ(probe.width, 96);
  ASSERT_EQ(probe.height, 64);
  ASSERT_EQ(probe.frames, 10);
  const int64_t pixels = int64_t{probe.frames} * probe.width * probe.height;

  const int port = cluster_.gateway().http_port();
  HttpCall call;
  call.method = "POST";
  call.path = "/quote/live-video-to-video";
  call.content_type = std::string("multipart/form-data; boundary=") + kBoundary;
  call.body =
      absl::StrCat("--", kBoundary, "\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\n",
                   kLive, "\r\n--", kBoundary,
                   "\r\nContent-Disposition: form-data; name=\"video\"; "
                   "filename=\"0.ts\"\r\nContent-Type: video/mp2t\r\n\r\n",
                   segment, "\r\n--", kBoundary, "--\r\n");
  call.headers["authorization"] = absl::StrCat("Bearer ", alice_);
  HttpResult r = HttpRequest(port, call);
  ASSERT_EQ(r.status, 200) << r.body << cluster_.Logs();
  auto json = nlohmann::json::parse(r.body, nullptr, false);
  ASSERT_TRUE(json.is_object()) << r.body;
  EXPECT_EQ(json["pipeline"], "live-video-to-video");
  EXPECT_EQ(json["model_id"], kLive);
  EXPECT_EQ(json["unit"], "pixel");
  EXPECT_EQ(json["units"], std::to_string(pixels));  // int64 as a string (proto JSON)
  EXPECT_EQ(json["units_basis"], "estimate");
  EXPECT_EQ(json["orchestrator"], "orch-1");
  EXPECT_DOUBLE_EQ(json["price_per_unit"].get<double>(), kCheap);
  const double total = json["total"].get<double>();
  EXPECT_DOUBLE_EQ(total, static_cast<double>(pixels) * kCheap);

  // The same segment through Gateway.Quote: the same units.
  v1::QuoteRequest q;
  q.mutable_live_video_segment()->set_model_id(kLive);
  q.mutable_live_video_segment()->set_segment(segment);
  v1::QuoteResponse quote;
  grpc::Status st = Quote(q, &quote);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(quote.units(), pixels);

  // The caps: per unit under the only node's price, a total under the quote, a malformed one.
  call.headers["x-max-price-per-unit"] = Exactly(kCheap / 2);
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "price cap")) << r.body;
  call.headers.erase("x-max-price-per-unit");
  call.headers["x-max-total-price"] = Exactly(total / 2);
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "x-max-total-price")) << r.body;
  call.headers["x-max-total-price"] = "lots";
  r = HttpRequest(port, call);
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_TRUE(absl::StrContains(r.body, "x-max-total-price")) << r.body;
  call.headers["x-max-total-price"] = Exactly(total);
  r = HttpRequest(port, call);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["units"], std::to_string(pixels));

  // The segment, run as a session runs it with the quoted total as its cap: the identity model
  // keeps the frame size, so the metered units are the quote's and the charge its total.
  v1::LiveVideoSegmentRequest run = q.live_video_segment();
  run.set_stream_id("quoted");
  v1::LiveVideoSegmentResponse out;
  auto ctx = Ctx(alice_, {{"x-max-total-price", Exactly(total)}});
  st = stub_->LiveVideoSegment(ctx.get(), run, &out);
  ASSERT_TRUE(st.ok()) << st.error_message() << "\n" << cluster_.Logs();
  EXPECT_EQ(out.frames(), probe.frames);
  EXPECT_EQ(out.job().units(), pixels);
  bool found = false;
  for (const auto& row : Rows()) {
    if (row.pipeline() != "live-video-to-video") continue;
    found = true;
    EXPECT_EQ(row.units(), pixels);
    EXPECT_LE(row.amount(), total);
    EXPECT_FALSE(row.disputed()) << row.job_id();
  }
  EXPECT_TRUE(found);
}

TEST_F(QuoteTest, CliQuote) {
  WriteFile(tmp_.path() / "in.png", MakeTestImage(tmp_, 24, 16, "png"));
  std::string out;
  const std::string base = absl::StrCat(BinaryPath("switchyard").string(), " --gateway ",
                                        cluster_.gateway_address(), " --api-key ", alice_, " ");
  int rc = RunCommand(absl::StrCat(base, "--json quote upscale --model ", kUpscaler, " --in ",
                                   (tmp_.path() / "in.png").string()),
                      &out);
  ASSERT_EQ(rc, 0) << out;
  const size_t brace = out.find('{');
  ASSERT_NE(brace, std::string::npos) << out;
  auto json = nlohmann::json::parse(out.substr(brace), nullptr, false);
  ASSERT_TRUE(json.is_object()) << out;
  EXPECT_EQ(json["units"], "384");
  EXPECT_DOUBLE_EQ(json["total"].get<double>(), 24 * 16 * kCheap);

  out.clear();
  rc = RunCommand(absl::StrCat(base, "quote llm --model tiny-llm --max-tokens 10 --prompt hi"),
                  &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "llm 'tiny-llm': 56 tokens (estimate)")) << out;

  out.clear();
  rc = RunCommand(absl::StrCat(base, "quote upscale --model ", kUpscaler, " --in /no/such.png"),
                  &out);
  EXPECT_EQ(rc, 2) << out;
  out.clear();
  rc = RunCommand(absl::StrCat(base, "quote --max-total-price 0.0000001 upscale --model ",
                               kUpscaler, " --in ", (tmp_.path() / "in.png").string()),
                  &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "NOT_FOUND")) << out;
}

}  // namespace
}  // namespace switchyard::testing

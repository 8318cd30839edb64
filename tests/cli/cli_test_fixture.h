// The CLI's unit tests' fixture: a fake gateway in process (the RPCs the tests call record
// their request and answer fixed data), CliTest running RunCli against it, and input makers.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::cli {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;

inline std::string PngHeader(uint32_t width, uint32_t height) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  png.append("\x00\x00\x00\x0dIHDR", 8);
  for (uint32_t v : {width, height}) {
    for (int shift = 24; shift >= 0; shift -= 8) png.push_back(static_cast<char>(v >> shift));
  }
  png.append("\x08\x02\x00\x00\x00", 5);
  return png;
}

inline std::string JpegHeader(int width, int height) {
  std::string jpeg("\xff\xd8", 2);
  // APP0 segment (length 16) with a JFIF payload, then SOF0.
  jpeg.append("\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 18);
  jpeg.append("\xff\xc0\x00\x11\x08", 5);
  jpeg.push_back(static_cast<char>(height >> 8));
  jpeg.push_back(static_cast<char>(height & 0xff));
  jpeg.push_back(static_cast<char>(width >> 8));
  jpeg.push_back(static_cast<char>(width & 0xff));
  jpeg.append("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10);
  return jpeg;
}

inline v1::ListCapabilitiesResponse SampleCapabilities() {
  v1::ListCapabilitiesResponse response;
  v1::Capability* c = response.add_capabilities();
  c->set_pipeline("upscale");
  c->set_model_id("esrgan-slim-x4");
  c->set_orchestrators(2);
  c->set_warm_orchestrators(1);
  c->set_capacity(4);
  c->set_in_use(1);
  c->set_min_price_per_unit(1.5e-6);
  c->set_unit("pixel");
  v1::ModelOffer* o = response.add_offers();
  o->set_orchestrator("orch-1");
  o->set_pipeline("upscale");
  o->set_model_id("esrgan-slim-x4");
  o->set_warm(true);
  o->set_state("ready");
  o->set_capacity(2);
  v1::OrchestratorInfo* info = response.add_orchestrators();
  info->set_id("orch-1");
  info->set_address("10.0.0.1:50061");
  info->set_source("registered");
  info->set_ready(true);
  info->set_in_flight(3);
  return response;
}

// ---------------------------------------------------------------------------------------------
// End to end against an in-process fake gateway.

class FakeGateway final : public v1::Gateway::Service {
 public:
  grpc::Status Upscale(grpc::ServerContext* context, const v1::UpscaleRequest* request,
                       v1::ImageResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_upscale_ = *request;
    }
    v1::Media* image = response->add_images();
    image->set_data("upscaled:" + request->image());
    image->set_content_type("image/png");
    image->set_width(256);
    image->set_height(192);
    FillJob(response->mutable_job(), request->model_id());
    return grpc::Status::OK;
  }

  grpc::Status Transcode(grpc::ServerContext* context, const v1::TranscodeRequest* request,
                         v1::TranscodeResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_transcode_ = *request;
    }
    for (const v1::Rendition& r : request->renditions()) {
      v1::RenditionResult* result = response->add_renditions();
      *result->mutable_rendition() = r;
      result->set_width(r.width() > 0 ? r.width() : 640);
      result->set_height(r.height() > 0 ? r.height() : 360);
      result->set_frames(30);
      result->set_data(std::string(static_cast<size_t>(r.bitrate_bps() / 1000), 'x'));
    }
    response->set_input_frames(30);
    response->set_duration_seconds(1.0);
    FillJob(response->mutable_job(), "libx264");
    return grpc::Status::OK;
  }

  grpc::Status ListCapabilities(grpc::ServerContext* context,
                                const v1::ListCapabilitiesRequest* request,
                                v1::ListCapabilitiesResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    *response = SampleCapabilities();
    response->mutable_capabilities(0)->set_pipeline(
        request->pipeline().empty() ? "upscale" : request->pipeline());
    return grpc::Status::OK;
  }

  // Two nodes: a warm favourite and one over the price cap.
  grpc::Status ExplainRoute(grpc::ServerContext* context, const v1::ExplainRouteRequest* request,
                            v1::ExplainRouteResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_explain_ = *request;
    }
    v1::RouteCandidate* warm = response->add_candidates();
    warm->set_node_id("orch-1");
    warm->set_address("10.0.0.1:50052");
    warm->set_tier("warm");
    warm->set_price_per_unit(0.5);
    warm->set_model_state("ready");
    warm->set_load(0.25);
    warm->set_latency_ms(40);
    warm->set_measured(true);
    warm->set_score(50);
    warm->set_best(true);
    v1::RouteCandidate* dear = response->add_candidates();
    dear->set_node_id("orch-2");
    dear->set_address("10.0.0.2:50052");
    dear->set_tier("filtered");
    dear->set_filter("price_over_cap");
    dear->set_reason("asks more than the price cap (3 > 1 per unit)");
    dear->set_price_per_unit(3);
    response->set_offering(2);
    response->set_eligible(1);
    return grpc::Status::OK;
  }
  v1::ExplainRouteRequest last_explain() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_explain_;
  }

  // An exact quote of 384 pixels at 0.25, with the caps it was sent echoed back.
  grpc::Status Quote(grpc::ServerContext* context, const v1::QuoteRequest* request,
                     v1::QuoteResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    std::string total_cap;
    if (auto it = context->client_metadata().find("x-max-total-price");
        it != context->client_metadata().end()) {
      total_cap.assign(it->second.data(), it->second.size());
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_quote_ = *request;
      last_total_cap_ = total_cap;
    }
    response->set_pipeline("upscale");
    response->set_model_id("esrgan");
    response->set_unit("pixel");
    response->set_units(384);
    response->set_units_basis("exact");
    response->set_units_exact(true);
    response->set_units_note("input pixels");
    response->set_orchestrator("orch-1");
    response->set_price_per_unit(0.25);
    response->set_total(96);
    response->set_min_price_per_unit(0.25);
    response->set_max_price_per_unit(0.5);
    response->set_eligible(2);
    if (!total_cap.empty()) response->set_max_total_price(std::stod(total_cap));
    return grpc::Status::OK;
  }
  v1::QuoteRequest last_quote() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_quote_;
  }
  std::string last_total_cap() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_total_cap_;
  }

  grpc::Status TextToImage(grpc::ServerContext* context, const v1::TextToImageRequest* request,
                           v1::ImageResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_text_to_image_ = *request;
    }
    const int n = request->has_num_images_per_prompt() ? request->num_images_per_prompt() : 1;
    for (int i = 0; i < n; ++i) {
      v1::Media* image = response->add_images();
      image->set_data(absl::StrCat("image", i, ":", request->prompt()));
      image->set_content_type("image/png");
      image->set_width(32);
      image->set_height(16);
      image->set_seed(request->seed() + i);
    }
    FillJob(response->mutable_job(), request->model_id());
    return grpc::Status::OK;
  }

  // Streams "Hel", "lo" and a last message with usage; fails after "Hel" when llm_error_ is set.
  grpc::Status LLM(grpc::ServerContext* context, const v1::LLMRequest* request,
                   grpc::ServerWriter<v1::LLMResponse>* writer) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_llm_ = *request;
    }
    v1::LLMResponse message;
    message.set_id("chatcmpl-1");
    message.set_model(request->model());
    message.add_choices()->mutable_delta()->set_content("Hel");
    writer->Write(message);
    if (!llm_error_.ok()) return llm_error_;
    message.mutable_choices(0)->mutable_delta()->set_content("lo");
    writer->Write(message);
    message.mutable_choices(0)->mutable_delta()->set_content("");
    message.mutable_choices(0)->set_finish_reason("stop");
    message.mutable_usage()->set_prompt_tokens(7);
    message.mutable_usage()->set_completion_tokens(2);
    message.mutable_usage()->set_total_tokens(9);
    FillJob(message.mutable_job(), request->model());
    writer->Write(message);
    return grpc::Status::OK;
  }

  // A 16 kHz mono 16-bit WAV of 0.5 s.
  grpc::Status TextToSpeech(grpc::ServerContext* context, const v1::TextToSpeechRequest* request,
                            v1::AudioResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    std::string wav("RIFF\x24\x3e\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00", 24);
    wav.append("\x80\x3e\x00\x00\x00\x7d\x00\x00\x02\x00\x10\x00", 12);
    wav.append("data\x80\x3e\x00\x00", 8);
    wav.append(16000, '\0');
    response->mutable_audio()->set_data(std::move(wav));
    response->mutable_audio()->set_content_type("audio/wav");
    FillJob(response->mutable_job(), request->model_id());
    return grpc::Status::OK;
  }

  grpc::Status GetUsage(grpc::ServerContext* context, const v1::GetUsageRequest* request,
                        v1::GetUsageResponse* response) override {
    Record(context);
    if (!error_.ok()) return error_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_usage_ = *request;
    }
    v1::UsageTotal* total = response->add_totals();
    total->set_api_key_id("key-1");
    total->set_pipeline("llm");
    total->set_model_id("tiny-llm");
    total->set_jobs(3);
    total->set_units(120);
    total->set_unit("token");
    total->set_amount(0.25);
    response->set_jobs(3);
    response->set_amount(0.25);
    return grpc::Status::OK;
  }

  void set_llm_error(grpc::Status error) { llm_error_ = std::move(error); }
  v1::GetUsageRequest last_usage() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_usage_;
  }
  v1::TextToImageRequest last_text_to_image() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_text_to_image_;
  }
  v1::LLMRequest last_llm() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_llm_;
  }

  void set_error(grpc::Status error) { error_ = std::move(error); }
  std::string last_request_id() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_request_id_;
  }
  v1::UpscaleRequest last_upscale() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_upscale_;
  }
  v1::TranscodeRequest last_transcode() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_transcode_;
  }
  int calls() const { return calls_; }

 private:
  void Record(grpc::ServerContext* context) {
    ++calls_;
    std::lock_guard<std::mutex> lock(mu_);
    const auto& md = context->client_metadata();
    auto it = md.find(kRequestIdMetadataKey);
    last_request_id_ = it == md.end() ? "" : std::string(it->second.data(), it->second.size());
  }

  static void FillJob(v1::JobInfo* job, const std::string& model) {
    job->set_request_id("job-1");
    job->set_orchestrator("orch-1");
    job->set_model_id(model);
    job->set_compute_ms(812.4);
    job->set_attempts(1);
    job->set_units(42);
  }

  grpc::Status error_ = grpc::Status::OK;
  grpc::Status llm_error_ = grpc::Status::OK;
  v1::TextToImageRequest last_text_to_image_;
  v1::LLMRequest last_llm_;
  std::atomic<int> calls_{0};
  std::mutex mu_;
  std::string last_request_id_;
  v1::ExplainRouteRequest last_explain_;
  v1::QuoteRequest last_quote_;
  std::string last_total_cap_;
  v1::UpscaleRequest last_upscale_;
  v1::TranscodeRequest last_transcode_;
  v1::GetUsageRequest last_usage_;
};

inline std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void WriteAll(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("switchyard_cli_test_" + GenerateRequestId());
    fs::create_directories(dir_);
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&gateway_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Shutdown();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), {"--gateway", "127.0.0.1:" + std::to_string(port_)});
    out_.str("");
    err_.str("");
    return RunCli(args, out_, err_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  int port_ = 0;
  FakeGateway gateway_;
  std::unique_ptr<grpc::Server> server_;
  std::ostringstream out_;
  std::ostringstream err_;
};

}  // namespace switchyard::cli

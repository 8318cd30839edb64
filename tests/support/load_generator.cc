#include "support/load_generator.h"

#include <algorithm>
#include <cstdint>
#include <functional>

#include <torch/script.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "support/tiny_models.h"

namespace switchyard::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kRefusedPause(100);

// Byte tokenizer (ids 0..255, eos 256); replies `self.reply` one byte per step (the position is
// the number of tokens after the prompt's last newline), then eos. `work` matmuls per step make
// a token take a while on purpose. Unlike kTinyLlmSource, the reply's logit is 100, so the jobs
// (sampled at the default temperature) get the same reply every time.
constexpr const char* kLlmSource = R"(
def encode(self, text: str) -> List[int]:
    ids: List[int] = []
    for c in text:
        ids.append(ord(c))
    return ids

def decode(self, ids: List[int]) -> str:
    out = ""
    for i in ids:
        out += chr(i)
    return out

def forward(self, ids: Tensor) -> Tensor:
    n = ids.size(1)
    count = 0
    i = n - 1
    while i >= 0 and int(ids[0, i]) != 10:
        count += 1
        i -= 1
    a = torch.ones([128, 128])
    for _ in range(self.work):
        a = torch.mm(a, a) / 128.0
    logits = torch.zeros([1, 257])
    if count < len(self.reply):
        logits[0, ord(self.reply[count])] = 100.0
    else:
        logits[0, 256] = 100.0
    return logits
)";

void SaveLlm(const fs::path& path, int64_t work, const std::string& reply) {
  SaveScriptModule(path, kLlmSource, [&](torch::jit::Module& m) {
    m.register_attribute("eos_token_id", c10::IntType::get(), int64_t{256});
    m.register_attribute("work", c10::IntType::get(), work);
    m.register_attribute("reply", c10::StringType::get(), reply);
  });
}

// A call that never reached a gateway: the channel could not connect.
bool NotAccepted(const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return false;
  const std::string& m = status.error_message();
  return absl::StrContains(m, "failed to connect") || absl::StrContains(m, "Connection refused") ||
         absl::StrContains(m, "connections to all backends failing") ||
         absl::StrContains(m, "Failed to connect");
}

}  // namespace

const char* JobKindName(JobKind kind) {
  switch (kind) {
    case JobKind::kUpscale:
      return "upscale";
    case JobKind::kLlm:
      return "llm";
    case JobKind::kTranscode:
      return "transcode";
  }
  return "?";
}

std::vector<nlohmann::json> SaveLoadModels(const fs::path& dir) {
  SaveLlm(dir / "load-llm.pt", 0, kLoadLlmReply);
  SaveLlm(dir / "slow-llm.pt", 12, std::string(400, 'z'));
  const auto entry = [&](const std::string& id, const std::string& file) {
    return nlohmann::json{
        {"id", id},        {"pipeline", "llm"}, {"path", (dir / file).string()},   {"warm", true},
        {"device", "cpu"}, {"queue_size", 8},   {"options", {{"max_tokens", 512}}}};
  };
  return {entry("load-llm", "load-llm.pt"), entry("slow-llm", "slow-llm.pt")};
}

LoadInputs MakeLoadInputs(const TempDir& dir) {
  LoadInputs in;
  in.png = MakeTestImage(dir, in.png_size, in.png_size, "png");
  SegmentSpec spec;
  spec.width = 160;
  spec.height = 120;
  spec.fps = "15";
  spec.seconds = 1.0;
  spec.gop_seconds = 1.0;
  in.segment = MakeTestSegment(dir, spec);
  return in;
}

std::string LoadSummary::FailedByStatus() const {
  if (failed_by_status.empty()) return "-";
  std::vector<std::string> parts;
  for (const auto& [code, n] : failed_by_status) parts.push_back(absl::StrCat(code, "=", n));
  return absl::StrJoin(parts, " ");
}

LoadSummary Summarize(const std::vector<JobOutcome>& outcomes) {
  LoadSummary s;
  std::vector<std::chrono::milliseconds> latencies;
  for (const auto& o : outcomes) {
    ++s.sent;
    if (o.accepted) ++s.accepted;
    if (o.code == grpc::StatusCode::OK) {
      ++s.completed;
      if (!o.valid) ++s.invalid;
      if (o.attempts > 1) ++s.retried;
      latencies.push_back(o.latency);
    } else {
      ++s.failed;
      ++s.failed_by_status[GrpcCodeName(o.code)];
    }
  }
  if (!latencies.empty()) {
    std::sort(latencies.begin(), latencies.end());
    s.p50 = latencies[latencies.size() / 2];
    s.p99 = latencies[std::min(latencies.size() - 1, latencies.size() * 99 / 100)];
    s.max_latency = latencies.back();
  }
  return s;
}

std::unique_ptr<v1::Gateway::Stub> FastReconnectGatewayStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return v1::Gateway::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

LoadGenerator::LoadGenerator(std::string gateway_address, const LoadInputs& inputs,
                             LoadOptions options)
    : address_(std::move(gateway_address)),
      inputs_(inputs),
      options_(std::move(options)),
      stub_(FastReconnectGatewayStub(address_)) {}

LoadGenerator::~LoadGenerator() { Stop(); }

void LoadGenerator::Start(std::chrono::milliseconds run_for) {
  const auto end = Clock::now() + run_for;
  for (int c = 0; c < options_.clients; ++c) {
    threads_.emplace_back([this, c, end] { Client(c, end); });
  }
}

void LoadGenerator::Stop() {
  stop_ = true;
  Join();
}

void LoadGenerator::Join() {
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

std::vector<JobOutcome> LoadGenerator::outcomes() const {
  MutexLock lock(&mu_);
  return outcomes_;
}

std::vector<JobOutcome> LoadGenerator::outcomes_since(Clock::time_point since) const {
  MutexLock lock(&mu_);
  std::vector<JobOutcome> out;
  for (const auto& o : outcomes_) {
    if (o.started >= since) out.push_back(o);
  }
  return out;
}

void LoadGenerator::Client(int index, Clock::time_point end) {
  for (int j = 0; j < options_.max_jobs_per_client && !stop_.load() && Clock::now() < end; ++j) {
    const JobKind kind = options_.mix[(index + j) % options_.mix.size()];
    const std::string id = absl::StrCat(options_.request_id_prefix, "-c", index, "-j", j);
    ++sent_;
    JobOutcome o = RunJob(kind, id);
    const bool o_accepted = o.accepted;
    {
      MutexLock lock(&mu_);
      outcomes_.push_back(std::move(o));
    }
    // A client whose call found no gateway backs off a little before the next job.
    const auto pause = o_accepted ? options_.pause : std::max(options_.pause, kRefusedPause);
    if (pause.count() > 0) std::this_thread::sleep_for(pause);
  }
}

JobOutcome LoadGenerator::RunJob(JobKind kind, const std::string& request_id) {
  JobOutcome o;
  o.kind = kind;
  o.request_id = request_id;
  o.deadline = options_.deadline;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.deadline);
  ctx.AddMetadata("x-request-id", request_id);
  if (!options_.api_key.empty()) {
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", options_.api_key));
  }
  o.started = Clock::now();
  grpc::Status status;
  v1::JobInfo job;
  std::string invalid;
  switch (kind) {
    case JobKind::kUpscale: {
      v1::UpscaleRequest req;
      req.set_model_id("esrgan-slim-x4");
      req.set_image(inputs_.png);
      v1::ImageResponse resp;
      status = stub_->Upscale(&ctx, req, &resp);
      job = resp.job();
      if (status.ok()) {
        const int want = inputs_.png_size * 4;
        if (resp.images_size() != 1) {
          invalid = absl::StrCat(resp.images_size(), " images");
        } else if (resp.images(0).width() != want || resp.images(0).height() != want) {
          invalid = absl::StrCat("image is ", resp.images(0).width(), "x", resp.images(0).height(),
                                 ", want ", want, "x", want);
        } else if (!absl::StartsWith(resp.images(0).data(), "\x89PNG")) {
          invalid = "image is not a PNG";
        }
      }
      break;
    }
    case JobKind::kLlm: {
      v1::LLMRequest req;
      req.set_model("load-llm");
      auto* m = req.add_messages();
      m->set_role("user");
      m->set_content("go");
      auto reader = stub_->LLM(&ctx, req);
      v1::LLMResponse r;
      std::string text;
      // Bounded: the reply is a few dozen tokens; the deadline bounds the time.
      for (int i = 0; i < 1000 && reader->Read(&r); ++i) {
        for (const auto& c : r.choices()) text += c.delta().content();
        if (r.has_job()) job = r.job();
      }
      status = reader->Finish();
      if (status.ok() && text != kLoadLlmReply) {
        invalid = absl::StrCat("text '", text, "', want '", kLoadLlmReply, "'");
      }
      break;
    }
    case JobKind::kTranscode: {
      v1::TranscodeRequest req;
      req.set_segment(inputs_.segment);
      auto* r = req.add_renditions();
      r->set_width(128);
      r->set_height(96);
      r->set_bitrate_bps(200000);
      r->set_preset("ultrafast");
      v1::TranscodeResponse resp;
      status = stub_->Transcode(&ctx, req, &resp);
      job = resp.job();
      if (status.ok()) {
        if (resp.renditions_size() != 1) {
          invalid = absl::StrCat(resp.renditions_size(), " renditions");
        } else if (resp.renditions(0).data().empty() || resp.renditions(0).frames() <= 0 ||
                   resp.renditions(0).frames() != resp.input_frames() ||
                   resp.renditions(0).width() != 128) {
          invalid = absl::StrCat("rendition: ", resp.renditions(0).data().size(), " bytes, ",
                                 resp.renditions(0).frames(), " frames of ", resp.input_frames(),
                                 ", width ", resp.renditions(0).width());
        }
      }
      break;
    }
  }
  o.latency = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - o.started);
  o.code = status.error_code();
  o.message = status.error_message();
  o.accepted = !NotAccepted(status);
  o.attempts = job.attempts();
  o.orchestrator = job.orchestrator();
  if (status.ok()) {
    if (invalid.empty() && job.request_id() != request_id) {
      invalid = absl::StrCat("job.request_id '", job.request_id(), "', want '", request_id, "'");
    }
    if (invalid.empty() && (job.orchestrator().empty() || job.attempts() < 1)) {
      invalid = "job info without orchestrator or attempts";
    }
    o.valid = invalid.empty();
    o.invalid_why = invalid;
  }
  return o;
}

}  // namespace switchyard::testing

// A steady, bounded load of mixed jobs on a gateway, for fault-injection tests and the soak
// (bench/soak.cc): N client threads each send jobs one after another (upscale with the real
// ESRGAN-slim model, LLM streams and transcode segments, round robin), every job with its own
// deadline and request id, and record one outcome per job. Every loop is bounded in count and
// time: a client stops at Stop(), at its job budget, or at the run's end time.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "common/mutex.h"
#include "support/media_fixtures.h"
#include "switchyard/v1/gateway.grpc.pb.h"

namespace switchyard::testing {

enum class JobKind { kUpscale, kLlm, kTranscode };
const char* JobKindName(JobKind kind);

// The reply of the "load-llm" model (one byte per token), and what "slow-llm" streams.
inline constexpr char kLoadLlmReply[] = "steady load reply";

// Saves the tiny TorchScript LLMs the load uses into `dir` and returns their orchestrator
// "models" entries (for ClusterOptions::extra_models): "load-llm" replies kLoadLlmReply at once;
// "slow-llm" streams up to 400 'z' tokens with some work per token (a stream to cut off
// mid-way). The upscale jobs use esrgan-slim-x4 from ModelDir() (ClusterOptions::models).
std::vector<nlohmann::json> SaveLoadModels(const std::filesystem::path& dir);

// The jobs' inputs, generated once (FFmpeg) and shared by every client.
struct LoadInputs {
  std::string png;  // 32x32 PNG for esrgan-slim-x4 (answer: 128x128)
  int png_size = 32;
  std::string segment;  // 1 s 160x120 H.264 MPEG-TS at 15 fps
};
LoadInputs MakeLoadInputs(const TempDir& dir);

// One job and how it ended.
struct JobOutcome {
  JobKind kind = JobKind::kUpscale;
  std::string request_id;  // sent as x-request-id
  // False when the call never reached a gateway (connection refused or no connection): such a
  // job was not accepted, e.g. during a gateway restart.
  bool accepted = true;
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  bool valid = false;  // OK and the result checked out (sizes, text, renditions, request id)
  std::string invalid_why;
  int attempts = 0;  // JobInfo.attempts (0 when it failed)
  std::string orchestrator;
  std::chrono::steady_clock::time_point started;
  std::chrono::milliseconds latency{0};
  std::chrono::milliseconds deadline{0};
};

struct LoadOptions {
  int clients = 3;
  std::vector<JobKind> mix = {JobKind::kUpscale, JobKind::kLlm, JobKind::kTranscode};
  std::chrono::milliseconds deadline{20000};  // per job
  // A client's pause between two jobs, to keep the load steady rather than saturating.
  std::chrono::milliseconds pause{20};
  int max_jobs_per_client = 100000;
  std::string request_id_prefix = "load";
  std::string api_key;  // sent as a bearer token when set
};

// Figures over a set of outcomes.
struct LoadSummary {
  int sent = 0;
  int accepted = 0;
  int completed = 0;  // OK
  int invalid = 0;    // OK but the result did not check out
  int failed = 0;
  std::map<std::string, int> failed_by_status;  // gRPC code name -> count
  int retried = 0;                              // completed with attempts > 1
  std::chrono::milliseconds p50{0};
  std::chrono::milliseconds p99{0};
  std::chrono::milliseconds max_latency{0};
  std::string FailedByStatus() const;  // "UNAVAILABLE=3 DEADLINE_EXCEEDED=1" or "-"
};
LoadSummary Summarize(const std::vector<JobOutcome>& outcomes);

// A gateway stub whose channel reconnects quickly (100..500 ms backoff), so a restarted gateway
// is used again within a second.
std::unique_ptr<v1::Gateway::Stub> FastReconnectGatewayStub(const std::string& address);

class LoadGenerator {
 public:
  LoadGenerator(std::string gateway_address, const LoadInputs& inputs, LoadOptions options);
  ~LoadGenerator();  // stops and joins
  LoadGenerator(const LoadGenerator&) = delete;
  LoadGenerator& operator=(const LoadGenerator&) = delete;

  // Starts the clients; they run until Stop(), their job budget, or `run_for` has passed.
  void Start(std::chrono::milliseconds run_for);
  // Asks the clients to stop after their current job and joins them (bounded by a job's
  // deadline).
  void Stop();
  // Waits for the clients to finish (their budget or run_for) and joins them.
  void Join();

  int sent() const { return sent_.load(); }
  std::vector<JobOutcome> outcomes() const;
  // Outcomes of jobs started at or after `since`.
  std::vector<JobOutcome> outcomes_since(std::chrono::steady_clock::time_point since) const;

  // Runs one job now, on the calling thread (also used by the clients).
  JobOutcome RunJob(JobKind kind, const std::string& request_id);

 private:
  void Client(int index, std::chrono::steady_clock::time_point end);

  const std::string address_;
  const LoadInputs& inputs_;
  const LoadOptions options_;
  std::unique_ptr<v1::Gateway::Stub> stub_;
  std::atomic<bool> stop_{false};
  std::atomic<int> sent_{0};
  std::vector<std::thread> threads_;
  mutable Mutex mu_;
  std::vector<JobOutcome> outcomes_ ABSL_GUARDED_BY(mu_);
};

}  // namespace switchyard::testing

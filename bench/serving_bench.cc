// Model serving benchmarks (issue: runner and model manager), each against a baseline measured in
// the same run on the same machine:
//   1. served vs raw: each --served-models model (default ESRGAN-slim x4) through the
//      orchestrator's gRPC API (PNG in, PNG out, two clients keeping the model busy) vs a bare
//      libtorch forward loop on the same model and thread settings;
//   2. dynamic batching on vs off at concurrency 8 on a small-input model;
//   3. cold load and first-request latency vs a warm hit, and resident memory per loaded model.
//
//   build/bin/serving_bench [--model-dir models] [--seconds 10] [--threads 2]
//                           [--served-models id[:pipeline],...] [--only-served]
//                           [--default-allocator]
// Rates are calls over the wall time until the last call started in the window ended; the CPU
// columns are the whole process's user + system time per call (getrusage), so on a machine the
// raw forward already keeps busy, served / raw cannot exceed raw CPU / served CPU per call.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "common/media/image_codec.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/orchestrator_server.h"
#include "runner/model_executor.h"
#include "switchyard/node/v1/node.grpc.pb.h"

namespace sy = switchyard;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

int64_t RssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  }
  return 0;
}

std::string TestPng(int side) {
  sy::media::RgbImage img{side, side, std::vector<uint8_t>(static_cast<size_t>(side * side * 3))};
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 31 % 251);
  return *sy::media::EncodePng(img);
}

// The process's CPU time (user + system, all threads) in seconds.
double ProcessCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// What RunClients measured: calls started within the window, the wall time until the last of
// them ended (the rate's denominator: a call that runs past the window is counted whole, so the
// window alone would favour more clients) and the process CPU time meanwhile.
struct Measured {
  std::vector<double> latencies_ms;
  double wall_s = 0;
  double cpu_s = 0;
  double rate() const { return wall_s > 0 ? static_cast<double>(latencies_ms.size()) / wall_s : 0; }
  double cpu_ms_per_call() const {
    return latencies_ms.empty() ? 0 : 1000.0 * cpu_s / static_cast<double>(latencies_ms.size());
  }
  double cores_busy() const { return wall_s > 0 ? cpu_s / wall_s : 0; }
};

// Runs `fn` on `clients` threads for `seconds`; returns per-call latencies (ms).
template <typename Fn>
std::vector<double> RunClients(int clients, double seconds, Fn fn, int* failures) {
  std::vector<std::vector<double>> lat(static_cast<size_t>(clients));
  std::atomic<int> failed{0};
  auto end = Clock::now() +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      while (Clock::now() < end) {
        auto t0 = Clock::now();
        if (!fn(c)) ++failed;
        lat[static_cast<size_t>(c)].push_back(Ms(Clock::now() - t0));
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  *failures = failed.load();
  return all;
}

// RunClients, timed: see Measured.
template <typename Fn>
Measured Measure(int clients, double seconds, Fn fn, int* failures) {
  Measured m;
  const double cpu0 = ProcessCpuSeconds();
  const auto t0 = Clock::now();
  m.latencies_ms = RunClients(clients, seconds, fn, failures);
  m.wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
  m.cpu_s = ProcessCpuSeconds() - cpu0;
  return m;
}

// A model section 1 measures: its id (a .pt in the model dir) and pipeline (upscale or
// image-to-image), from `id[:pipeline]`.
struct ServedModel {
  std::string id;
  std::string pipeline = "upscale";
};

std::vector<ServedModel> ParseServedModels(const std::string& list) {
  std::vector<ServedModel> out;
  for (absl::string_view item : absl::StrSplit(list, ',', absl::SkipEmpty())) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    ServedModel m{parts[0]};
    if (parts.size() > 1) m.pipeline = parts[1];
    out.push_back(m);
  }
  return out;
}

void ServedVsRaw(const std::string& model_dir, const ServedModel& served_model, double seconds,
                 int threads) {
  const std::string& id = served_model.id;
  const bool image_to_image = served_model.pipeline == "image-to-image";
  if (!image_to_image && served_model.pipeline != "upscale") {
    std::cerr << id << ": pipeline " << served_model.pipeline
              << " is not measured (upscale or image-to-image)\n";
    return;
  }
  std::cout << "\n## 1. Served vs raw: " << id << " (" << served_model.pipeline
            << "), intra-op threads " << threads << "\n\n";
  std::cout << "| input | raw forward/s | served jobs/s | served / raw | served p50 ms | p99 ms "
               "| raw CPU ms/forward | served CPU ms/job | raw cores busy | served cores busy |\n"
               "|---|---|---|---|---|---|---|---|---|---|\n";
  auto model = sy::runner::TorchModel::Load(model_dir + "/" + id + ".pt", "cpu");
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return;
  }
  sy::orchestrator::OrchestratorConfig cfg;
  cfg.node_id = "bench";
  cfg.listen = "127.0.0.1:0";
  cfg.http_listen = "";
  cfg.intra_op_threads = threads;
  cfg.inter_op_threads = 1;
  sy::orchestrator::ModelConfig m;
  m.id = id;
  m.pipeline = served_model.pipeline;
  m.path = model_dir + "/" + id + ".pt";
  m.warm = true;
  m.device = "cpu";
  m.queue_size = 8;
  cfg.models.push_back(m);
  cfg.transcode.enabled = false;
  auto server = sy::orchestrator::OrchestratorServer::Create(cfg);
  if (!server.ok()) {
    std::cerr << server.status() << "\n";
    return;
  }
  (*server)->Start();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(256 << 20);
  auto stub = sy::node::v1::Orchestrator::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", (*server)->port()), grpc::InsecureChannelCredentials(), args));

  for (int side : {128, 256}) {
    at::Tensor input = at::rand({1, 3, side, side}) * 255;
    // The raw baseline calls forward with what the pipeline passes (image-to-image: the
    // documented defaults, one image).
    auto raw_forward = [&] {
      if (!image_to_image) return (*model)->Forward(input).ok();
      return (*model)
          ->Run({input, std::string("x"), std::string(), int64_t{0}, 0.8, 7.5, 1.5, int64_t{100},
                 int64_t{1}})
          .ok();
    };
    raw_forward();  // warm
    int fails = 0;
    const Measured raw = Measure(
        1, seconds, [&](int) { return raw_forward(); }, &fails);

    std::string png = TestPng(side);
    // Two clients keep the single executor busy while the other job is decoded or encoded, as
    // production traffic does.
    const Measured served = Measure(
        2, seconds,
        [&](int) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
          sy::v1::ImageResponse resp;
          if (image_to_image) {
            sy::v1::ImageToImageRequest req;
            req.set_model_id(id);
            req.set_image(png);
            req.set_prompt("x");
            return stub->ImageToImage(&ctx, req, &resp).ok();
          }
          sy::v1::UpscaleRequest req;
          req.set_model_id(id);
          req.set_image(png);
          return stub->Upscale(&ctx, req, &resp).ok();
        },
        &fails);
    std::printf("| %dx%d | %.2f | %.2f | %.3f | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f |%s\n",
                side, side, raw.rate(), served.rate(), served.rate() / raw.rate(),
                Percentile(served.latencies_ms, 0.5), Percentile(served.latencies_ms, 0.99),
                raw.cpu_ms_per_call(), served.cpu_ms_per_call(), raw.cores_busy(),
                served.cores_busy(), fails ? " (failures!)" : "");
  }
  (*server)->Shutdown(std::chrono::milliseconds(1000));
}

void Batching(const std::string& dir, double seconds) {
  std::cout << "\n## 2. Dynamic batching, concurrency 8, small-input model (conv net on 1x3x32x32)"
               "\n\n| batching | jobs/s | p50 ms | p99 ms | forward passes | jobs per pass |\n"
               "|---|---|---|---|---|---|\n";
  // A small conv model: per-call overhead dominates, which is what batching amortises.
  torch::jit::Module mod("small");
  mod.register_parameter("w", at::randn({16, 3, 3, 3}) * 0.1, false);
  mod.register_parameter("w2", at::randn({3, 16, 3, 3}) * 0.1, false);
  mod.define(R"(
def forward(self, x):
    y = torch.relu(torch.conv2d(x, self.w, padding=1))
    return torch.conv2d(y, self.w2, padding=1)
)");
  std::string path = dir + "/bench-small.pt";
  mod.save(path);
  auto model = sy::runner::TorchModel::Load(path, "cpu");
  if (!model.ok()) return;
  for (int batch : {1, 8}) {
    auto executor = sy::runner::ModelExecutor::Create(
        *model, {.instances = 1,
                 .queue_size = 64,
                 .max_batch_size = batch,
                 .max_queue_delay = absl::Milliseconds(batch > 1 ? 2 : 0)});
    at::Tensor input = at::rand({1, 3, 32, 32});
    int fails = 0;
    auto lat = RunClients(
        8, seconds,
        [&](int) {
          sy::runner::CancelToken cancel;
          return (*executor)->RunBatchable(input, absl::Now() + absl::Seconds(30), cancel).ok();
        },
        &fails);
    double passes = static_cast<double>((*executor)->passes());
    std::printf("| %s | %.0f | %.2f | %.2f | %.0f | %.2f |%s\n",
                batch > 1 ? "on (max 8, 2 ms)" : "off", static_cast<double>(lat.size()) / seconds,
                Percentile(lat, 0.5), Percentile(lat, 0.99), passes,
                static_cast<double>((*executor)->jobs_run()) / std::max(1.0, passes),
                fails ? " (failures!)" : "");
  }
  std::remove(path.c_str());
}

void ColdVsWarm(const std::string& model_dir) {
  std::cout
      << "\n## 3. Cold load vs warm hit (esrgan-slim, 64x64 input)\n\n"
         "| model | load + warm-up ms | first request ms | warm request ms | RSS growth MiB |\n"
         "|---|---|---|---|---|\n";
  for (const char* id : {"esrgan-slim-x2", "esrgan-slim-x4", "esrgan-slim-x8"}) {
    sy::orchestrator::ModelConfig m;
    m.id = id;
    m.pipeline = "upscale";
    m.path = model_dir + "/" + id + ".pt";
    m.device = "cpu";
    m.warmup_size = 32;
    sy::orchestrator::ModelManager manager({m}, nullptr);
    int64_t rss0 = RssKb();
    auto t0 = Clock::now();
    auto executor = manager.Acquire(id, absl::Now() + absl::Seconds(60));
    double load_ms = Ms(Clock::now() - t0);
    if (!executor.ok()) continue;
    at::Tensor input = at::rand({1, 3, 64, 64}) * 255;
    auto run = [&] {
      auto t = Clock::now();
      sy::runner::CancelToken cancel;
      (*executor)->RunBatchable(input, absl::Now() + absl::Seconds(60), cancel).IgnoreError();
      return Ms(Clock::now() - t);
    };
    double first = run();
    std::vector<double> warm;
    for (int i = 0; i < 5; ++i) warm.push_back(run());
    std::printf("| %s | %.0f | %.1f | %.1f | %.1f |\n", id, load_ms, load_ms + first,
                Percentile(warm, 0.5), static_cast<double>(RssKb() - rss0) / 1024.0);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard model serving benchmarks"};
  std::string model_dir = "models";
  double seconds = 10;
  int threads = 2;
  app.add_option("--model-dir", model_dir, "Where scripts/prepare-models put the models");
  app.add_option("--seconds", seconds, "Measuring time per configuration");
  app.add_option("--threads", threads, "libtorch intra-op threads (same for raw and served)");
  std::string served_models = "esrgan-slim-x4";
  app.add_option("--served-models", served_models,
                 "Section 1's models, comma-separated id[:pipeline] (upscale or image-to-image), "
                 "e.g. esrgan-medium-x4,waifu2x-noise2:image-to-image");
  bool only_served = false;
  app.add_flag("--only-served", only_served, "Run section 1 only");
  bool default_allocator = false;
  app.add_flag("--default-allocator", default_allocator,
               "Keep glibc's malloc defaults instead of the orchestrator's settings "
               "(KeepFreedMemoryForReuse, which switchyard-orchestrator applies at start)");
  CLI11_PARSE(app, argc, argv);
  // As switchyard-orchestrator does (src/orchestrator/main.cc): without it glibc hands the
  // forward's multi-MB activations back to the kernel and page-faults them in again on the next
  // call, a cost the raw loop and the served executor thread pay differently (different arenas).
  if (!default_allocator) sy::KeepFreedMemoryForReuse();
  if (auto st = sy::runner::ConfigureTorchThreads(threads, 1); !st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  for (const ServedModel& m : ParseServedModels(served_models)) {
    ServedVsRaw(model_dir, m, seconds, threads);
  }
  if (only_served) return 0;
  Batching(model_dir, seconds);
  ColdVsWarm(model_dir);
  return 0;
}

// Model serving benchmarks (issue: runner and model manager), each against a baseline measured in
// the same run on the same machine:
//   1. served vs raw: each --served-models model (default ESRGAN-slim x4) through the
//      orchestrator's gRPC API (the pipeline's request and response, --clients clients, two by
//      default, keeping the model busy) vs a bare libtorch loop of the same model calls on the
//      same thread settings (see Workload: OCR pages and live video frames too), alternating in
//      --rounds windows;
//   2. dynamic batching on vs off at concurrency 8 on a small-input model;
//   3. cold load and first-request latency vs a warm hit, and resident memory per loaded model.
//
//   build/bin/serving_bench [--model-dir models] [--seconds 10] [--threads 2]
//                           [--served-models id[:pipeline],...] [--clients 2] [--rounds 3]
//                           [--only-served] [--default-allocator]
// Rates are calls over the wall time until the last call started in the window ended; the CPU
// columns are the whole process's user + system time per call (getrusage), so on a machine the
// raw forward already keeps busy, served / raw cannot exceed raw CPU / served CPU per call.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <grpcpp/grpcpp.h>
#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "common/media/image_codec.h"
#include "orchestrator/models/model_manager.h"
#include "orchestrator/orchestrator_server.h"
#include "orchestrator/pipelines/image_pipelines.h"
#include "orchestrator/pipelines/ocr.h"
#include "runner/model_executor.h"
#include "runner/ocr_bundle.h"
#include "support/media_fixtures.h"
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

// Adds one window's measurement to a total over rounds.
void Accumulate(const Measured& round, Measured* total) {
  total->latencies_ms.insert(total->latencies_ms.end(), round.latencies_ms.begin(),
                             round.latencies_ms.end());
  total->wall_s += round.wall_s;
  total->cpu_s += round.cpu_s;
}

// A model section 1 measures: its id (a .pt in the model dir) and pipeline, from
// `id[:pipeline]` (default upscale).
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

using Stub = sy::node::v1::Orchestrator::Stub;

// One input of section 1. `raw` is the model's bare libtorch work for one unit, called with what
// the pipeline passes (upscale, image-to-image, segment-anything-2: one forward; image-to-text:
// the page's detect, classify and recognize calls; live-video-to-video: one frame's forward);
// `served` is one job through the orchestrator's gRPC API (PNG or MPEG-TS in, the pipeline's
// response out), `units_per_job` units of raw work (live video: the segment's frames).
struct Workload {
  std::string input;
  std::function<bool()> raw;
  std::function<bool(Stub&, int client)> served;
  double units_per_job = 1;
};

void SetDeadline(grpc::ClientContext* ctx) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(300));
}

// A call's outcome; a failure is printed (a benchmark that only says "failed" hides the cause).
bool Checked(const absl::Status& status, const char* what) {
  if (!status.ok()) std::cerr << what << ": " << status << "\n";
  return status.ok();
}
bool Checked(const grpc::Status& status, const char* what) {
  if (!status.ok()) {
    std::cerr << what << ": gRPC status " << status.error_code() << ": " << status.error_message()
              << "\n";
  }
  return status.ok();
}

// Upscale and image-to-image on random 128 and 256 px squares; image-to-image's raw call passes
// the documented defaults, one image.
std::vector<Workload> ImageWorkloads(sy::runner::TorchModel* model, const ServedModel& m) {
  const bool image_to_image = m.pipeline == "image-to-image";
  std::vector<Workload> out;
  for (int side : {128, 256}) {
    const at::Tensor input = at::rand({1, 3, side, side}) * 255;
    Workload w;
    w.input = absl::StrCat(side, "x", side);
    w.raw = [model, input, image_to_image] {
      if (!image_to_image) return Checked(model->Forward(input).status(), "raw forward");
      return Checked(model
                         ->Run({input, std::string("x"), std::string(), int64_t{0}, 0.8, 7.5, 1.5,
                                int64_t{100}, int64_t{1}})
                         .status(),
                     "raw run");
    };
    w.served = [id = m.id, png = TestPng(side), image_to_image](Stub& stub, int) {
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      sy::v1::ImageResponse resp;
      if (image_to_image) {
        sy::v1::ImageToImageRequest req;
        req.set_model_id(id);
        req.set_image(png);
        req.set_prompt("x");
        return Checked(stub.ImageToImage(&ctx, req, &resp), "ImageToImage");
      }
      sy::v1::UpscaleRequest req;
      req.set_model_id(id);
      req.set_image(png);
      return Checked(stub.Upscale(&ctx, req, &resp), "Upscale");
    };
    out.push_back(std::move(w));
  }
  return out;
}

// Segment-anything-2 with one foreground point at the centre and the API's defaults
// (multimask_output, return_logits and normalize_coords true: the masks come back as floats) on
// random 256 and 512 px squares.
std::vector<Workload> MaskWorkloads(sy::runner::TorchModel* model, const ServedModel& m) {
  std::vector<Workload> out;
  // Two served forms: the masks as JSON strings (what a client calling a node directly without
  // packed_tensors gets), and packed float32 tensors (what the gateway asks of its nodes; it
  // prints the JSON itself, docs/pipelines-image.md).
  for (auto [side, packed] :
       {std::pair{256, false}, std::pair{256, true}, std::pair{512, false}, std::pair{512, true}}) {
    const at::Tensor input = at::rand({1, 3, side, side}) * 255;
    Workload w;
    w.input = absl::StrCat(side, "x", side, packed ? " packed" : " JSON");
    w.raw = [model, input] {
      return Checked(model
                         ->Run({input, at::full({1, 2}, 0.5f), at::ones({1}, at::kLong),
                                at::empty({0, 4}), at::zeros({0, 256, 256}), true, true})
                         .status(),
                     "raw run");
    };
    w.served = [id = m.id, png = TestPng(side), side, packed](Stub& stub, int) {
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      sy::v1::SegmentAnything2Request req;
      req.set_model_id(id);
      req.set_image(png);
      req.set_packed_tensors(packed);
      req.add_point_coords(static_cast<float>(side) / 2);
      req.add_point_coords(static_cast<float>(side) / 2);
      req.add_point_labels(1);
      sy::v1::MasksResponse resp;
      return Checked(stub.SegmentAnything2(&ctx, req, &resp), "SegmentAnything2");
    };
    out.push_back(std::move(w));
  }
  return out;
}

// The OCR pipeline's constants (src/orchestrator/pipelines/image_pipelines.cc, PaddleOCR's
// defaults): the raw baseline runs the networks on the tensors the pipeline would build.
constexpr int kOcrLineHeight = 48;
constexpr int kOcrMinLineWidth = 320;
constexpr int kOcrMaxLineWidth = 2048;
constexpr int kOcrClsWidth = 192;
constexpr size_t kOcrBatch = 6;
constexpr float kOcrUnclipRatio = 2.0f;

// Lines as float [N, 3, 48, width], padded on the right with 127.5, as the pipeline builds them.
at::Tensor OcrLinesTensor(const std::vector<sy::media::RgbImage>& lines,
                          const std::vector<int>& widths, int width) {
  at::Tensor out = at::full({static_cast<int64_t>(lines.size()), 3, kOcrLineHeight, width}, 127.5f);
  for (size_t i = 0; i < lines.size(); ++i) {
    const sy::media::RgbImage line =
        sy::orchestrator::ocr::Resize(lines[i], widths[i], kOcrLineHeight);
    out[static_cast<int64_t>(i)]
        .narrow(2, 0, widths[i])
        .copy_(sy::orchestrator::ImageToTensor(line)[0]);
  }
  return out;
}

// Image-to-text (an OCR bundle) on a rendered page of `lines` lines. The raw unit is the page's
// network calls: detect on the resized page, classify and recognize on the detected lines in
// batches of 6, with the inputs prepared beforehand.
absl::StatusOr<Workload> OcrWorkload(sy::runner::TorchModel* model, const ServedModel& m,
                                     const sy::testing::TempDir& dir, int lines) {
  namespace ocr = sy::orchestrator::ocr;
  std::vector<std::string> text;
  for (int i = 0; i < lines; ++i) {
    text.push_back(absl::StrCat("Line ", i + 1, ": the quick brown fox jumps over 13 lazy dogs."));
  }
  std::string png = sy::testing::RenderTextPng(dir, text);
  auto image = sy::media::DecodeImage(png, int64_t{1} << 24);
  if (!image.ok()) return image.status();
  const ocr::Size det = ocr::DetectionSize(image->width, image->height);
  const at::Tensor det_input =
      sy::orchestrator::ImageToTensor(ocr::Resize(*image, det.width, det.height));
  auto map = model->RunMethod("detect", {det_input});
  if (!map.ok()) return map.status();
  const at::Tensor probs = map->toTensor().to(at::kFloat).contiguous();
  ocr::DbParams db;
  db.unclip_ratio = kOcrUnclipRatio;
  auto boxes = ocr::DbPostProcess(probs.data_ptr<float>(), det.width, det.height, image->width,
                                  image->height, db);
  if (!boxes.ok()) return boxes.status();
  std::vector<sy::media::RgbImage> crops;
  for (const ocr::Box& box : *boxes) {
    const sy::media::RgbImage crop = ocr::Crop(*image, box);
    crops.push_back(
        ocr::Resize(crop, ocr::LineWidth(crop.width, crop.height, kOcrLineHeight, kOcrMaxLineWidth),
                    kOcrLineHeight));
  }
  std::sort(crops.begin(), crops.end(),
            [](const auto& a, const auto& b) { return a.width < b.width; });
  const bool has_cls = model->IntAttribute(sy::runner::kOcrClassifierAttribute).value_or(0) == 1;
  std::vector<at::Tensor> cls_batches, rec_batches;
  for (size_t start = 0; start < crops.size(); start += kOcrBatch) {
    const std::vector<sy::media::RgbImage> batch(
        crops.begin() + static_cast<std::ptrdiff_t>(start),
        crops.begin() + static_cast<std::ptrdiff_t>(std::min(crops.size(), start + kOcrBatch)));
    std::vector<int> cls_widths, rec_widths;
    int width = kOcrMinLineWidth;
    for (const auto& c : batch) {
      cls_widths.push_back(ocr::LineWidth(c.width, c.height, kOcrLineHeight, kOcrClsWidth));
      rec_widths.push_back(c.width);
      width = std::max(width, c.width);
    }
    if (has_cls) cls_batches.push_back(OcrLinesTensor(batch, cls_widths, kOcrClsWidth));
    rec_batches.push_back(OcrLinesTensor(batch, rec_widths, width));
  }
  Workload w;
  w.input = absl::StrCat(lines, "-line page ", image->width, "x", image->height, " (",
                         boxes->size(), " boxes)");
  w.raw = [model, det_input, cls_batches, rec_batches] {
    bool ok = model->RunMethod("detect", {det_input}).ok();
    for (const at::Tensor& t : cls_batches) ok = ok && model->RunMethod("classify", {t}).ok();
    for (const at::Tensor& t : rec_batches) ok = ok && model->RunMethod("recognize", {t}).ok();
    return ok;
  };
  w.served = [id = m.id, png](Stub& stub, int) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    sy::v1::ImageToTextRequest req;
    req.set_model_id(id);
    req.set_image(png);
    sy::v1::ImageToTextResponse resp;
    return Checked(stub.ImageToText(&ctx, req, &resp), "ImageToText") && !resp.text().empty();
  };
  return w;
}

// Live-video-to-video on a 1 s, 30 fps, 320x240 H.264 MPEG-TS segment (testsrc2). The raw unit
// is one frame's forward with params "{}"; a served job is the segment (decode, 30 forwards,
// libx264 encode), each client its own stream.
Workload LiveWorkload(sy::runner::TorchModel* model, const ServedModel& m,
                      const sy::testing::TempDir& dir) {
  sy::testing::SegmentSpec spec;
  spec.width = 320;
  spec.height = 240;
  spec.seconds = 1;
  const at::Tensor frame = at::rand({1, 3, spec.height, spec.width}) * 255;
  Workload w;
  w.input = "1 s 320x240 30 fps segment";
  w.raw = [model, frame] {
    return Checked(model->Run({frame, std::string("{}")}).status(), "raw run");
  };
  w.units_per_job = 30;
  w.served = [id = m.id, segment = sy::testing::MakeTestSegment(dir, spec),
              sequence = std::make_shared<std::atomic<int64_t>>(0)](Stub& stub, int client) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    sy::v1::LiveVideoSegmentRequest req;
    req.set_model_id(id);
    req.set_segment(segment);
    req.set_stream_id(absl::StrCat("bench-", client));
    req.set_sequence((*sequence)++);
    sy::v1::LiveVideoSegmentResponse resp;
    return Checked(stub.LiveVideoSegment(&ctx, req, &resp), "LiveVideoSegment") &&
           resp.frames() == 30;
  };
  return w;
}

void ServedVsRaw(const std::string& model_dir, const ServedModel& served_model, double seconds,
                 int threads, int clients, int rounds, const sy::testing::TempDir& dir) {
  const std::string& id = served_model.id;
  const std::string& pipeline = served_model.pipeline;
  const char* unit = pipeline == "image-to-text"         ? "page"
                     : pipeline == "live-video-to-video" ? "frame"
                                                         : "forward";
  if (pipeline != "upscale" && pipeline != "image-to-image" && pipeline != "segment-anything-2" &&
      pipeline != "image-to-text" && pipeline != "live-video-to-video") {
    std::cerr << id << ": pipeline " << pipeline
              << " is not measured (upscale, image-to-image, segment-anything-2, image-to-text, "
                 "live-video-to-video)\n";
    return;
  }
  std::cout << "\n## 1. Served vs raw: " << id << " (" << pipeline << "), intra-op threads "
            << threads << ", served clients " << clients << ", unit: " << unit << "\n\n";
  std::cout << "| input | raw units/s | served units/s | served / raw | per-round ratios "
               "| served p50 ms/job | p99 ms | raw CPU ms/unit | served CPU ms/unit "
               "| raw cores busy | served cores busy |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|\n";
  auto model = sy::runner::TorchModel::Load(model_dir + "/" + id + ".pt", "cpu");
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return;
  }
  std::vector<Workload> workloads;
  if (pipeline == "segment-anything-2") {
    workloads = MaskWorkloads(model->get(), served_model);
  } else if (pipeline == "image-to-text") {
    for (int lines : {4, 12}) {
      auto w = OcrWorkload(model->get(), served_model, dir, lines);
      if (!w.ok()) {
        std::cerr << id << ": " << w.status() << "\n";
        return;
      }
      workloads.push_back(std::move(*w));
    }
  } else if (pipeline == "live-video-to-video") {
    workloads.push_back(LiveWorkload(model->get(), served_model, dir));
  } else {
    workloads = ImageWorkloads(model->get(), served_model);
  }

  sy::orchestrator::OrchestratorConfig cfg;
  cfg.node_id = "bench";
  cfg.listen = "127.0.0.1:0";
  cfg.http_listen = "";
  cfg.intra_op_threads = threads;
  cfg.inter_op_threads = 1;
  sy::orchestrator::ModelConfig m;
  m.id = id;
  m.pipeline = pipeline;
  m.path = model_dir + "/" + id + ".pt";
  m.warm = true;
  m.device = "cpu";
  m.queue_size = 8;
  if (pipeline == "image-to-text") m.max_input_pixels = 4 << 20;
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

  for (const Workload& w : workloads) {
    // Warm both paths (the first served job also opens the pipeline's codecs).
    if (!w.raw() || !w.served(*stub, 0)) {
      std::cerr << id << ": " << w.input << ": the warm-up call failed\n";
      continue;
    }
    // Raw and served alternate in `rounds` windows of seconds / rounds each, so that a load change
    // on a shared machine hits both sides instead of whichever ran second; the rates are the
    // totals', and the spread of the per-round ratios says how much the machine moved.
    int raw_fails = 0, served_fails = 0;
    Measured raw, served;
    double round_min = 0, round_max = 0;
    for (int r = 0; r < rounds; ++r) {
      int fails = 0;
      const Measured raw_round = Measure(
          1, seconds / rounds, [&](int) { return w.raw(); }, &fails);
      raw_fails += fails;
      // Two clients (the default) keep the single executor busy while the other job is decoded
      // or encoded, as production traffic does; pipelines whose media work outlasts the forward
      // need more (--clients).
      const Measured served_round = Measure(
          clients, seconds / rounds, [&](int c) { return w.served(*stub, c); }, &fails);
      served_fails += fails;
      const double ratio = served_round.rate() * w.units_per_job / raw_round.rate();
      round_min = r == 0 ? ratio : std::min(round_min, ratio);
      round_max = r == 0 ? ratio : std::max(round_max, ratio);
      Accumulate(raw_round, &raw);
      Accumulate(served_round, &served);
    }
    const double raw_units = raw.rate();
    const double served_units = served.rate() * w.units_per_job;
    std::printf(
        "| %s | %.2f | %.2f | %.3f | %.2f-%.2f | %.0f | %.0f | %.1f | %.1f | %.2f | %.2f |%s\n",
        w.input.c_str(), raw_units, served_units, served_units / raw_units, round_min, round_max,
        Percentile(served.latencies_ms, 0.5), Percentile(served.latencies_ms, 0.99),
        raw.cpu_ms_per_call(), served.cpu_ms_per_call() / w.units_per_job, raw.cores_busy(),
        served.cores_busy(), raw_fails + served_fails ? " (failures!)" : "");
    std::fflush(stdout);
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
                 "Section 1's models, comma-separated id[:pipeline] (upscale, image-to-image, "
                 "segment-anything-2, image-to-text, live-video-to-video; default upscale), e.g. "
                 "esrgan-medium-x4,waifu2x-noise2:image-to-image,paddleocr-v4:image-to-text");
  int clients = 2;
  app.add_option("--clients", clients, "Section 1's concurrent served clients (1..64)")
      ->check(CLI::Range(1, 64));
  int rounds = 3;
  app.add_option("--rounds", rounds,
                 "Section 1: raw and served alternate in this many windows (1..20) of "
                 "seconds / rounds each")
      ->check(CLI::Range(1, 20));
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
  sy::testing::TempDir fixtures;  // rendered pages and video segments
  for (const ServedModel& m : ParseServedModels(served_models)) {
    ServedVsRaw(model_dir, m, seconds, threads, clients, rounds, fixtures);
  }
  if (only_served) return 0;
  Batching(model_dir, seconds);
  ColdVsWarm(model_dir);
  return 0;
}

// Transcoding (issues 5 and 24): the orchestrator's in-process TranscodeSegment against the
// ffmpeg CLI run once per segment (one decode, `split=3` + `scale` per output), in the same run,
// on the same segments, with the same ladder and the same libx264 settings:
//   source: 1080p30 H.264, testsrc2 with temporal noise (so that bitrate matters), 12 Mbit/s,
//           keyframe every 2 s, cut into 2-second MPEG-TS segments by the ffmpeg CLI;
//   ladder: 1280x720 3 Mbit/s, 854x480 1.6 Mbit/s, 640x360 800 kbit/s; veryfast, profile main,
//           GOP 2 s (no scenecut), maxrate 1.5x, bufsize 2x, frame rate passed through.
// The baseline is the CLI as its users run it: its own thread defaults (no -threads options);
// --cli-pinned adds the CLI pinned to one decoder and filter thread, labelled. Ours runs with the
// orchestrator's defaults (thread policy "auto", scale_from_larger off) unless told otherwise.
// At each concurrency (segments at once: threads calling TranscodeSegment, or ffmpeg processes)
// every side runs --rounds times over the segments, rotating which goes first. Reported:
// segments/s, per-segment latency p50/p95, CPU per segment, and ours against the CLI's defaults;
// then the PSNR of every rendition against the source scaled to its size (FFmpeg's psnr filter),
// both sides; with --profile PERF, where each side's CPU goes (perf record).
// Targets (issue 24): at concurrency 1, latency p50 at most 0.8x the CLI's; at 2 and more,
// throughput at least 1.1x; PSNR within 0.1 dB of the CLI's at the same bitrate.
//
// Needs the `ffmpeg` CLI at run time (apt-get install -y ffmpeg); not a build dependency.
//
//   build/bin/transcode_bench [--segments 8] [--rounds 3] [--concurrency 1,2,4]
//                             [--thread-policy auto|fixed] [--threads 1] [--scale-from-larger
//                             on|off]
//                             [--cli-pinned] [--profile perf] [--ffmpeg ffmpeg] [--work-dir DIR]
//                             [--keep] [--split-ladder] [--serial-renditions] [--hw-decode MODE]
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/daemon.h"
#include "orchestrator/transcode/transcoder.h"

extern char** environ;

namespace sy = switchyard;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

struct Rung {
  const char* name;
  int width;
  int height;
  int64_t bitrate_bps;
};
constexpr Rung kLadder[] = {
    {"720p", 1280, 720, 3'000'000}, {"480p", 854, 480, 1'600'000}, {"360p", 640, 360, 800'000}};
constexpr size_t kRungs = std::size(kLadder);
constexpr double kSegmentSeconds = 2;
constexpr const char* kSourceFilter =
    "testsrc2=size=1920x1080:rate=30,noise=alls=8:allf=t+u,format=yuv420p";

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// User + system CPU seconds of this process (RUSAGE_SELF) or of its waited-for children.
double CpuSeconds(int who) {
  rusage u{};
  getrusage(who, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return absl::StrCat(a, " ", b, " ", c);
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool WriteFile(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  return static_cast<bool>(out);
}

// The executable for `name`: itself if it has a slash, else the first match on PATH; "" if none.
std::string FindExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  for (const auto& dir : absl::StrSplit(path != nullptr ? path : "/usr/bin:/bin", ':')) {
    if (dir.empty()) continue;
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

// Starts args[0] (a path) with stdin on /dev/null and stdout and stderr into `log`; its pid, or -1.
// posix_spawn rather than fork: this process maps libtorch, and copying its page tables per
// segment would be charged to the CLI.
pid_t SpawnBackground(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 2, 1);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Runs args[0] as SpawnBackground does and waits; its exit status, or -1 if it could not be
// started or was killed.
int Spawn(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = SpawnBackground(args, log);
  if (pid < 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs fn(i) for i in [0, n) on `concurrency` threads; returns the wall time in seconds.
template <typename Fn>
double RunPool(int n, int concurrency, Fn fn) {
  std::atomic<int> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < concurrency; ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < n; i = next++) fn(i);
    });
  }
  for (auto& t : threads) t.join();
  return Seconds(Clock::now() - t0);
}

struct Bench {
  std::string ffmpeg;
  fs::path dir;
  int segments = 8;
  bool serial_renditions = false;  // ours: TranscodeOptions.parallel_renditions = false
  std::string hw_decode = "auto";  // ours: TranscodeOptions.hw_decode (the CLI decodes on the CPU)
  // ours: TranscodeOptions.thread_policy; "auto" gets the segments in flight as the orchestrator
  // counts them (this process's TranscodeSegment calls running now).
  std::string thread_policy = "fixed";
  bool scale_from_larger = false;  // ours: TranscodeOptions.scale_from_larger
  mutable std::atomic<int> in_flight{0};
  std::vector<fs::path> sources;

  fs::path Source(int i) const { return sources[static_cast<size_t>(i)]; }
  static fs::path Output(const fs::path& out_dir, int segment, size_t rung) {
    char name[64];
    std::snprintf(name, sizeof(name), "seg%03d_%s.ts", segment, kLadder[rung].name);
    return out_dir / name;
  }

  // Generates the source, unless a previous run left the same one in the work dir.
  bool Generate() {
    const fs::path src = dir / "source";
    const fs::path done = src / absl::StrCat("complete.", segments);
    fs::create_directories(src);
    const auto t0 = Clock::now();
    const bool reuse = fs::exists(done);
    const int rc = reuse ? 0
                         : Spawn({ffmpeg,
                                  "-hide_banner",
                                  "-nostdin",
                                  "-loglevel",
                                  "error",
                                  "-y",
                                  "-f",
                                  "lavfi",
                                  "-i",
                                  kSourceFilter,
                                  "-t",
                                  absl::StrCat(segments * kSegmentSeconds),
                                  "-c:v",
                                  "libx264",
                                  "-preset",
                                  "veryfast",
                                  "-b:v",
                                  "12M",
                                  "-maxrate",
                                  "12M",
                                  "-bufsize",
                                  "24M",
                                  "-g",
                                  "60",
                                  "-keyint_min",
                                  "60",
                                  "-sc_threshold",
                                  "0",
                                  "-f",
                                  "segment",
                                  "-segment_time",
                                  absl::StrCat(kSegmentSeconds),
                                  "-segment_format",
                                  "mpegts",
                                  (src / "seg%03d.ts").string()},
                                 dir / "generate.log");
    if (rc != 0) {
      std::cerr << "generating the source failed (exit " << rc << "); see "
                << (dir / "generate.log") << "\n";
      return false;
    }
    for (int i = 0; i < segments; ++i) {
      char name[32];
      std::snprintf(name, sizeof(name), "seg%03d.ts", i);
      if (!fs::exists(src / name)) {
        std::cerr << "the source has no segment " << name << "\n";
        return false;
      }
      sources.push_back(src / name);
    }
    WriteFile(done, "");
    uintmax_t bytes = 0;
    for (const auto& s : sources) bytes += fs::file_size(s);
    std::printf(
        "Source: %d segments of %.0f s, 1920x1080 30 fps H.264, %.1f Mbit/s (%s), "
        "%s in %.1f s\n",
        segments, kSegmentSeconds, bytes * 8.0 / (segments * kSegmentSeconds) / 1e6, kSourceFilter,
        reuse ? "reused" : "generated", Seconds(Clock::now() - t0));
    return true;
  }

  // Ours: read the segment, TranscodeSegment, write the renditions (the orchestrator gets the
  // segment in memory and returns the renditions in memory; files here are to match the CLI).
  static sy::orchestrator::RenditionSpec Spec(const Rung& r) {
    sy::orchestrator::RenditionSpec spec;
    spec.name = r.name;
    spec.width = r.width;
    spec.height = r.height;
    spec.bitrate_bps = r.bitrate_bps;
    spec.gop_seconds = kSegmentSeconds;
    spec.preset = "veryfast";
    spec.profile = "main";
    return spec;
  }

  bool Ours(int i, int threads, const fs::path& out_dir, std::string* plan = nullptr) const {
    std::vector<sy::orchestrator::RenditionSpec> ladder;
    for (const Rung& r : kLadder) ladder.push_back(Spec(r));
    sy::orchestrator::TranscodeOptions options;
    options.container = "mpegts";
    options.encoder_threads = threads;
    options.parallel_renditions = !serial_renditions;
    options.hw_decode = hw_decode;
    options.thread_policy = thread_policy;
    options.scale_from_larger = scale_from_larger;
    const std::string segment = ReadFile(Source(i));
    options.segments_in_flight = ++in_flight;
    auto result = sy::orchestrator::TranscodeSegment(segment, ladder, options);
    --in_flight;
    if (!result.ok()) {
      std::cerr << "ours, segment " << i << ": " << result.status() << "\n";
      return false;
    }
    if (plan != nullptr) *plan = result->thread_plan;
    for (size_t r = 0; r < kRungs; ++r) {
      if (!WriteFile(Output(out_dir, i, r), result->renditions[r].data)) return false;
    }
    return true;
  }

  // An experiment, not the product: each rendition in its own thread, through its own
  // TranscodeSegment call with a one-rung ladder, so the segment is decoded once per rendition.
  // An upper bound on what encoding the renditions of one decode in parallel threads inside
  // TranscodeSegment would give, less the extra decodes.
  bool OursSplit(int i, int threads, const fs::path& out_dir) const {
    const std::string segment = ReadFile(Source(i));
    std::atomic<bool> ok{true};
    std::vector<std::thread> workers;
    for (size_t r = 0; r < kRungs; ++r) {
      workers.emplace_back([&, r] {
        sy::orchestrator::TranscodeOptions options;
        options.container = "mpegts";
        options.encoder_threads = threads;
        auto result = sy::orchestrator::TranscodeSegment(segment, {Spec(kLadder[r])}, options);
        if (!result.ok() || !WriteFile(Output(out_dir, i, r), result->renditions[0].data)) {
          ok = false;
        }
      });
    }
    for (auto& w : workers) w.join();
    return ok;
  }

  // The CLI: one process per segment, one decode, split=3 and a scale per output, each output
  // encoded with what OpenVideoEncoder in src/orchestrator/transcode/video_encoder.cc sets.
  // `threads` 0: the CLI's own defaults for decoder, filter and encoder threads (none of the
  // -threads options).
  std::vector<std::string> CliArgs(int i, int threads, const fs::path& out_dir) const {
    std::vector<std::string> args = {ffmpeg,      "-hide_banner", "-nostdin",
                                     "-loglevel", "error",        "-y"};
    if (threads > 0) args.insert(args.end(), {"-threads", "1"});  // decoder, as ours
    args.insert(args.end(), {"-i", Source(i).string()});
    if (threads > 0) args.insert(args.end(), {"-filter_complex_threads", "1"});
    std::string graph = absl::StrCat("[0:v]split=", kRungs);
    for (size_t r = 0; r < kRungs; ++r) absl::StrAppend(&graph, "[v", r, "]");
    for (size_t r = 0; r < kRungs; ++r) {
      absl::StrAppend(&graph, ";[v", r, "]scale=", kLadder[r].width, ":", kLadder[r].height,
                      ":flags=bicubic[o", r, "]");
    }
    args.insert(args.end(), {"-filter_complex", graph});
    for (size_t r = 0; r < kRungs; ++r) {
      const int64_t b = kLadder[r].bitrate_bps;
      args.insert(args.end(), {"-map",         absl::StrCat("[o", r, "]"),
                               "-c:v",         "libx264",
                               "-preset",      "veryfast",
                               "-profile:v",   "main",
                               "-b:v",         absl::StrCat(b),
                               "-maxrate",     absl::StrCat(b * 3 / 2),
                               "-bufsize",     absl::StrCat(b * 2),
                               "-g",           "60",
                               "-forced-idr",  "1",
                               "-x264-params", "scenecut=0",
                               "-fps_mode",    "passthrough",
                               "-an",          "-f",
                               "mpegts"});
      if (threads > 0) args.insert(args.end(), {"-threads", absl::StrCat(threads)});
      args.push_back(Output(out_dir, i, r).string());
    }
    return args;
  }

  bool Cli(int i, int threads, const fs::path& out_dir) const {
    char log[48];
    std::snprintf(log, sizeof(log), "seg%03d.log", i);
    const int rc = Spawn(CliArgs(i, threads, out_dir), out_dir / log);
    if (rc != 0)
      std::cerr << "CLI, segment " << i << ": exit " << rc << "; see " << out_dir / log << "\n";
    return rc == 0;
  }
};

// Where a side's CPU goes, from `perf record -a` samples of its processes' threads (`comm`),
// grouped by the library they were in: the work both sides must do (libx264 encoding,
// libavcodec decoding the H.264 source, libswscale scaling) and the rest.
struct CpuShares {
  std::map<std::string, double> percent;  // category -> share of the side's samples
  std::string error;                      // why there is none
};

std::string CategoryOf(const std::string& dso) {
  auto starts = [&](const char* prefix) { return dso.rfind(prefix, 0) == 0; };
  if (starts("libx264")) return "libx264 (encoding)";
  if (starts("libavcodec")) return "libavcodec (decoding the source)";
  if (starts("libswscale")) return "libswscale (scaling)";
  if (starts("libavfilter")) return "libavfilter (filter graph)";
  if (starts("libavformat")) return "libavformat (demuxing, muxing)";
  if (starts("libavutil")) return "libavutil";
  if (starts("[kernel")) return "kernel";
  if (starts("libc.so") || starts("libc-")) return "libc";
  if (starts("ld-linux")) return "dynamic loader";
  if (dso == "transcode_bench" || dso == "ffmpeg") return "the program itself";
  return "other";
}

// Runs `work` under `perf record -a` and reads back the shares of the threads named `comm`.
template <typename Work>
CpuShares ProfileSide(const std::string& perf, const fs::path& dir, const std::string& tag,
                      const std::string& comm, Work work) {
  CpuShares shares;
  const fs::path data = dir / absl::StrCat("perf.", tag, ".data");
  const pid_t pid = SpawnBackground({perf, "record", "-a", "-F", "499", "-o", data.string()},
                                    dir / ("perf." + tag + ".log"));
  if (pid < 0) {
    shares.error = "perf could not be started";
    return shares;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // perf attaches to every CPU
  work();
  kill(pid, SIGINT);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const fs::path report = dir / ("perf." + tag + ".report");
  if (Spawn({perf, "report", "-i", data.string(), "--stdio", "--comm", comm, "--sort", "dso",
             "--percent-limit", "0"},
            report) != 0) {
    shares.error = absl::StrCat("perf report failed; see ", report.string(), " and ",
                                (dir / ("perf." + tag + ".log")).string());
    return shares;
  }
  // Lines like "    49.80%  libx264.so.164"; with --comm the shares are of that comm's samples.
  std::istringstream in(ReadFile(report));
  std::string line;
  double total = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    char* end = nullptr;
    const double pct = std::strtod(line.c_str(), &end);
    if (end == line.c_str() || *end != '%') continue;
    std::string dso(end + 1);
    dso.erase(0, dso.find_first_not_of(" \t"));
    dso.erase(dso.find_last_not_of(" \t\r") + 1);
    shares.percent[CategoryOf(dso)] += pct;
    total += pct;
  }
  if (total <= 0) shares.error = absl::StrCat("no samples of ", comm, "; see ", report.string());
  // perf report gives shares of all samples; make them shares of this comm's.
  for (auto& [category, pct] : shares.percent) pct = pct * 100 / std::max(total, 1e-9);
  return shares;
}

struct Side {
  std::string name;
  double wall = 0;
  double cpu = 0;  // CPU seconds, all threads or processes
  int segments = 0;
  int failures = 0;
  std::vector<double> latencies;  // seconds per segment, start of its call to its end
  std::vector<double> round_walls;
  double Rate() const { return wall > 0 ? segments / wall : 0; }
  double CpuPerSegment() const { return cpu / std::max(1, segments); }
  // The q-quantile of the per-segment latencies (nearest rank).
  double Latency(double q) const {
    if (latencies.empty()) return NAN;
    std::vector<double> sorted = latencies;
    std::sort(sorted.begin(), sorted.end());
    const size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, rank > 0 ? rank - 1 : 0)];
  }
};

// PSNR (the psnr filter's "average", all planes) of `out` against `source` scaled to WxH with the
// scale filter's defaults; NaN if it could not be measured.
double Psnr(const Bench& b, const fs::path& out, const fs::path& source, const Rung& r,
            const fs::path& log) {
  const int rc = Spawn(
      {b.ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-i", out.string(), "-i", source.string(),
       "-lavfi", absl::StrCat("[1:v]scale=", r.width, ":", r.height, "[ref];[0:v][ref]psnr"), "-f",
       "null", "-"},
      log);
  if (rc != 0) return NAN;
  const std::string text = ReadFile(log);
  const size_t at = text.rfind("average:");
  if (at == std::string::npos) return NAN;
  return std::strtod(text.c_str() + at + 8, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Switchyard transcoding benchmark: TranscodeSegment vs the ffmpeg CLI"};
  int segments = 8;
  int rounds = 3;
  std::vector<int> concurrencies = {1, 2, 4};
  int threads = 1;
  std::string ffmpeg_name = "ffmpeg";
  std::string work_dir;
  bool keep = false;
  bool cli_pinned = false;
  bool split_ladder = false;
  std::string only = "both";
  app.add_option("--segments", segments, "2-second segments to generate and transcode")
      ->check(CLI::Range(1, 1000));
  app.add_option("--rounds", rounds, "Runs of each side per configuration (rotating order)")
      ->check(CLI::Range(1, 100));
  app.add_option("--concurrency", concurrencies, "Segments transcoded at once (every side)")
      ->delimiter(',')
      ->check(CLI::Range(1, 64));
  app.add_option("--threads", threads,
                 "libx264 threads per rendition for ours with --thread-policy fixed "
                 "(TranscodeOptions.encoder_threads) and for the pinned CLI (-threads)")
      ->check(CLI::Range(1, 16));
  app.add_option("--ffmpeg", ffmpeg_name, "The ffmpeg CLI (a name on PATH or a path)");
  app.add_option("--work-dir", work_dir,
                 "Where to put the source and outputs (default: a temp dir)");
  app.add_flag("--keep", keep, "Keep the work dir");
  app.add_flag("--cli-pinned", cli_pinned,
               "Also time the CLI pinned to one decoder and filter thread and --threads x264 "
               "threads (-threads 1 -filter_complex_threads 1 ... -threads N), labelled; the "
               "baseline is always the CLI with its own defaults");
  app.add_flag("--split-ladder", split_ladder,
               "Also time, for information, each rendition in its own thread with its own "
               "TranscodeSegment call (one decode per rendition), at concurrency 1");
  bool serial_renditions = false;
  app.add_flag("--serial-renditions", serial_renditions,
               "Ours encodes a segment's renditions one after another on one thread (the "
               "transcoder before parallel renditions), for comparison");
  std::string hw_decode = "auto";
  app.add_option("--hw-decode", hw_decode,
                 "Ours decodes with NVDEC (cuda: required; auto, the orchestrator's default: when "
                 "the machine has a GPU) or in software (none); the CLI decodes in software")
      ->check(CLI::IsMember({"none", "auto", "cuda"}));
  std::string thread_policy = "auto";
  app.add_option("--thread-policy", thread_policy,
                 "Ours: auto (the orchestrator's default: threads from the cores and the "
                 "segments in flight) or fixed (one decoder thread, --threads x264 threads per "
                 "rendition)")
      ->check(CLI::IsMember({"fixed", "auto"}));
  std::string scale_from_larger = "off";
  app.add_option("--scale-from-larger", scale_from_larger,
                 "Ours: scale the smaller renditions from the largest one's scaled frame (on) or "
                 "each from the decoded frame (off, the orchestrator's default)")
      ->check(CLI::IsMember({"on", "off"}));
  std::string perf_name;
  app.add_option("--profile", perf_name,
                 "After the timed part, run ours and the CLI with its defaults once more over the "
                 "segments at concurrency 1 under `perf record -a` (PERF: the perf tool, e.g. "
                 "perf; needs perf_event access) and report where each side's CPU goes");
  app.add_option("--only", only, "Time one side only, no PSNR (for profiling)")
      ->check(CLI::IsMember({"both", "ours", "cli"}));
  CLI11_PARSE(app, argc, argv);
  // Ours runs in this process as in the orchestrator, with the orchestrator's allocator settings
  // (main.cc); the ffmpeg CLI processes it spawns keep glibc's defaults.
  switchyard::KeepFreedMemoryForReuse();

  Bench b;
  b.segments = segments;
  b.serial_renditions = serial_renditions;
  b.hw_decode = hw_decode;
  b.thread_policy = thread_policy;
  b.scale_from_larger = scale_from_larger == "on";
  b.ffmpeg = FindExecutable(ffmpeg_name);
  if (b.ffmpeg.empty()) {
    std::cerr << "transcode_bench: the ffmpeg CLI (\"" << ffmpeg_name
              << "\") was not found; it is the baseline and generates the source. Install it "
                 "(Debian 12: apt-get install -y ffmpeg) or pass --ffmpeg PATH.\n";
    return 2;
  }
  b.dir = work_dir.empty() ? fs::temp_directory_path() / absl::StrCat("transcode_bench.", getpid())
                           : fs::path(work_dir);
  fs::create_directories(b.dir);
  if (Spawn({b.ffmpeg, "-hide_banner", "-version"}, b.dir / "version.log") != 0) {
    std::cerr << "transcode_bench: " << b.ffmpeg << " -version failed; is it the ffmpeg CLI?\n";
    return 2;
  }
  const std::string version = ReadFile(b.dir / "version.log");
  std::printf("# Transcoding: TranscodeSegment vs the ffmpeg CLI\n\nCLI: %s (%s)\n",
              version.substr(0, version.find('\n')).c_str(), b.ffmpeg.c_str());
  std::printf(
      "Machine: %u hardware threads; load average at start %s\n"
      "Ours: thread_policy \"%s\"%s, scale_from_larger %s, hw_decode \"%s\"%s\n",
      std::thread::hardware_concurrency(), LoadAverage().c_str(), thread_policy.c_str(),
      thread_policy == "fixed" ? absl::StrCat(" (", threads, " x264 threads)").c_str() : "",
      scale_from_larger.c_str(), hw_decode.c_str(),
      serial_renditions ? ", renditions one after another" : "");
  if (!b.Generate()) return 1;

  // Warm-up, untimed: page cache, lazy library loading, x264 init tables.
  {
    const fs::path warm = b.dir / "warmup";
    fs::create_directories(warm);
    if (!b.Ours(0, threads, warm) || !b.Cli(0, 0, warm)) return 1;
  }

  // The sides: ours, the CLI with its defaults (the baseline: how its users run it) and, with
  // --cli-pinned, the CLI pinned to one decoder/filter thread. Each configuration runs every side
  // --rounds times over the segments, rotating which goes first.
  enum SideKind { kOurs, kCliDefaults, kCliPinned };
  std::vector<SideKind> kinds;
  if (only != "cli") kinds.push_back(kOurs);
  if (only != "ours") kinds.push_back(kCliDefaults);
  if (only != "ours" && cli_pinned) kinds.push_back(kCliPinned);
  const char* kNames[] = {"ours", "ffmpeg CLI, its defaults (baseline)",
                          "ffmpeg CLI pinned (-threads 1, filter threads 1)"};
  std::printf(
      "\n## Throughput and latency: %d segments x %d rounds per side; ladder 720p/3M, 480p/1.6M, "
      "360p/800k, veryfast\n\n"
      "| concurrency | side | segments | wall s | segments/s | latency p50 s | latency p95 s | "
      "CPU s/segment | vs the CLI's defaults |\n|---|---|---|---|---|---|---|---|---|\n",
      segments, rounds);
  std::fflush(stdout);
  fs::path psnr_ours, psnr_cli;
  std::string psnr_config;
  bool failed = false;
  std::vector<std::string> verdicts;
  std::vector<std::string> plans;
  for (int concurrency : concurrencies) {
    const std::string tag = absl::StrCat("c", concurrency);
    std::vector<Side> sides(kinds.size());
    std::vector<fs::path> dirs(kinds.size());
    for (size_t k = 0; k < kinds.size(); ++k) {
      sides[k].name = kNames[kinds[k]];
      dirs[k] = b.dir / absl::StrCat(kinds[k] == kOurs          ? "ours_"
                                     : kinds[k] == kCliDefaults ? "cli_"
                                                                : "cli_pinned_",
                                     tag);
      fs::create_directories(dirs[k]);
    }
    std::string plan;
    for (int round = 0; round < rounds; ++round) {
      for (size_t step = 0; step < kinds.size(); ++step) {
        const size_t k = (step + static_cast<size_t>(round)) % kinds.size();
        Side& side = sides[k];
        std::atomic<int> failures{0};
        std::mutex mu;
        const bool is_ours = kinds[k] == kOurs;
        const int who = is_ours ? RUSAGE_SELF : RUSAGE_CHILDREN;
        const double cpu0 = CpuSeconds(who);
        const double wall = RunPool(segments, concurrency, [&](int i) {
          const auto t0 = Clock::now();
          std::string segment_plan;
          bool ok = false;
          if (is_ours) {
            ok = b.Ours(i, threads, dirs[k], &segment_plan);
          } else {
            ok = b.Cli(i, kinds[k] == kCliPinned ? threads : 0, dirs[k]);
          }
          const double seconds = Seconds(Clock::now() - t0);
          std::lock_guard<std::mutex> lock(mu);
          if (!ok) ++failures;
          side.latencies.push_back(seconds);
          if (is_ours && plan.find(segment_plan) == std::string::npos) {
            absl::StrAppend(&plan, plan.empty() ? "" : "; ", segment_plan);
          }
        });
        side.cpu += CpuSeconds(who) - cpu0;
        side.wall += wall;
        side.round_walls.push_back(wall);
        side.segments += segments;
        side.failures += failures;
      }
    }
    if (!plan.empty()) plans.push_back(absl::StrCat("concurrency ", concurrency, ": ", plan));
    const Side* baseline = nullptr;
    for (size_t k = 0; k < kinds.size(); ++k) {
      if (kinds[k] == kCliDefaults) baseline = &sides[k];
    }
    for (size_t k = 0; k < kinds.size(); ++k) {
      const Side& s = sides[k];
      std::string vs = "-";
      if (kinds[k] == kCliDefaults) {
        vs = "1";
      } else if (baseline != nullptr) {
        std::string per_round;
        for (size_t r = 0; r < s.round_walls.size(); ++r) {
          absl::StrAppend(&per_round, r ? ", " : "",
                          absl::StrFormat("%.2f", baseline->round_walls[r] / s.round_walls[r]));
        }
        vs = absl::StrFormat(
            "throughput **%.3f**x (rounds %s), latency p50 **%.3f**x, CPU/segment %.3fx",
            s.Rate() / baseline->Rate(), per_round, s.Latency(0.5) / baseline->Latency(0.5),
            s.CpuPerSegment() / baseline->CpuPerSegment());
        if (kinds[k] == kOurs) {
          if (concurrency == 1) {
            const double ratio = s.Latency(0.5) / baseline->Latency(0.5);
            verdicts.push_back(
                absl::StrFormat("concurrency 1: latency p50 %.3fx the CLI's (target <= 0.8): %s",
                                ratio, ratio <= 0.8 ? "met" : "NOT met"));
          } else {
            const double ratio = s.Rate() / baseline->Rate();
            verdicts.push_back(
                absl::StrFormat("concurrency %d: throughput %.3fx the CLI's (target >= 1.1): %s",
                                concurrency, ratio, ratio >= 1.1 ? "met" : "NOT met"));
          }
        }
      }
      std::printf("| %d | %s | %d | %.2f | %.3f | %.2f | %.2f | %.2f | %s |%s\n", concurrency,
                  s.name.c_str(), s.segments, s.wall, s.Rate(), s.Latency(0.5), s.Latency(0.95),
                  s.CpuPerSegment(), vs.c_str(), s.failures ? " (failures!)" : "");
      failed = failed || s.failures > 0;
    }
    std::fflush(stdout);
    if (psnr_config.empty() && only == "both") {
      psnr_ours = dirs[0];
      psnr_cli = dirs[1];
      psnr_config = absl::StrCat("concurrency ", concurrency);
    }
  }
  if (split_ladder) {
    const fs::path dir = b.dir / absl::StrCat("ours_split_t", threads);
    fs::create_directories(dir);
    Side ours;
    for (int round = 0; round < rounds; ++round) {
      std::atomic<int> ours_failed{0};
      const double cpu0 = CpuSeconds(RUSAGE_SELF);
      ours.wall += RunPool(segments, 1, [&](int i) {
        if (!b.OursSplit(i, threads, dir)) ++ours_failed;
      });
      ours.cpu += CpuSeconds(RUSAGE_SELF) - cpu0;
      ours.segments += segments;
      ours.failures += ours_failed;
    }
    std::printf(
        "| 1 | ours, renditions in 3 threads of %d x264 threads (3 decodes; experiment) | %d | "
        "%.2f | %.3f | - | - | %.2f | - |%s\n",
        threads, ours.segments, ours.wall, ours.Rate(), ours.CpuPerSegment(),
        ours.failures ? " (failures!)" : "");
    std::fflush(stdout);
  }
  if (!plans.empty()) {
    std::printf("\nOurs, the segments' thread plans (TranscodeResult::thread_plan):\n");
    for (const auto& p : plans) std::printf("- %s\n", p.c_str());
  }
  if (only == "both") {
    std::printf("\nTargets:\n");
    for (const auto& v : verdicts) std::printf("- %s\n", v.c_str());
  }
  if (!perf_name.empty()) {
    const std::string perf = FindExecutable(perf_name);
    if (perf.empty()) {
      std::cerr << "transcode_bench: --profile " << perf_name << ": not found\n";
      return 2;
    }
    const fs::path dir = b.dir / "profile";
    fs::create_directories(dir);
    double ours_cpu = 0, cli_cpu = 0;
    CpuShares ours = ProfileSide(perf, dir, "ours", "transcode_bench", [&] {
      const double cpu0 = CpuSeconds(RUSAGE_SELF);
      RunPool(segments, 1, [&](int i) { b.Ours(i, threads, dir); });
      ours_cpu = (CpuSeconds(RUSAGE_SELF) - cpu0) / segments;
    });
    CpuShares cli = ProfileSide(perf, dir, "cli", "ffmpeg", [&] {
      const double cpu0 = CpuSeconds(RUSAGE_CHILDREN);
      RunPool(segments, 1, [&](int i) { b.Cli(i, 0, dir); });
      cli_cpu = (CpuSeconds(RUSAGE_CHILDREN) - cpu0) / segments;
    });
    std::printf(
        "\n## Where the CPU goes (perf record -a -F 499, one pass at concurrency 1; share of "
        "each side's samples)\n\n");
    if (!ours.error.empty() || !cli.error.empty()) {
      std::printf("Not measured: %s %s\n", ours.error.c_str(), cli.error.c_str());
    } else {
      std::map<std::string, int> order;
      for (const auto& [c, p] : ours.percent) order[c] = 0;
      for (const auto& [c, p] : cli.percent) order[c] = 0;
      std::printf(
          "| where | ours %% | ours CPU s/segment | CLI %% | CLI CPU s/segment |\n"
          "|---|---|---|---|---|\n");
      double ours_work = 0, cli_work = 0;
      for (const auto& [category, unused] : order) {
        const double o = ours.percent.count(category) ? ours.percent.at(category) : 0;
        const double c = cli.percent.count(category) ? cli.percent.at(category) : 0;
        std::printf("| %s | %.1f | %.2f | %.1f | %.2f |\n", category.c_str(), o, o / 100 * ours_cpu,
                    c, c / 100 * cli_cpu);
        if (category.rfind("libx264", 0) == 0 || category.rfind("libavcodec", 0) == 0 ||
            category.rfind("libswscale", 0) == 0) {
          ours_work += o / 100 * ours_cpu;
          cli_work += c / 100 * cli_cpu;
        }
      }
      std::printf(
          "| all | 100 | %.2f | 100 | %.2f |\n\nEncoding, decoding and scaling (the work both "
          "sides must do): ours %.2f s of %.2f s CPU per segment (%.0f%%), the CLI %.2f s of "
          "%.2f s (%.0f%%).\n",
          ours_cpu, cli_cpu, ours_work, ours_cpu, 100 * ours_work / std::max(ours_cpu, 1e-9),
          cli_work, cli_cpu, 100 * cli_work / std::max(cli_cpu, 1e-9));
    }
    std::fflush(stdout);
  }
  std::printf("\nLoad average at the end: %s\n", LoadAverage().c_str());
  std::fflush(stdout);
  if (only != "both") return failed ? 1 : 0;

  // Quality: every rendition of every segment against the source segment scaled to its size.
  // Per rendition, the segments' PSNRs are combined through their mean squared error (all
  // segments have the same frame count), as the psnr filter's own average over a stream would.
  std::printf(
      "\n## Quality (%s outputs): PSNR against the scaled source, psnr filter\n\n"
      "| rendition | ours dB | CLI (defaults) dB | ours - CLI dB | ours kbit/s | CLI kbit/s | "
      "within "
      "0.1 dB |\n|---|---|---|---|---|---|---|\n",
      psnr_config.c_str());
  std::vector<double> psnr(2 * kRungs * static_cast<size_t>(segments), NAN);
  const fs::path psnr_logs = b.dir / "psnr";
  fs::create_directories(psnr_logs);
  RunPool(static_cast<int>(psnr.size()), std::max(1u, std::thread::hardware_concurrency()),
          [&](int job) {
            const auto j = static_cast<size_t>(job);
            const bool is_cli = j % 2 == 1;
            const size_t rung = (j / 2) % kRungs;
            const int seg = static_cast<int>(j / 2 / kRungs);
            const fs::path out = Bench::Output(is_cli ? psnr_cli : psnr_ours, seg, rung);
            psnr[j] = Psnr(b, out, b.Source(seg), kLadder[rung],
                           psnr_logs / absl::StrCat("psnr_", job, ".log"));
          });
  bool quality_met = true;
  for (size_t rung = 0; rung < kRungs; ++rung) {
    double mse[2] = {0, 0};
    uintmax_t bytes[2] = {0, 0};
    bool ok = true;
    for (int seg = 0; seg < segments; ++seg) {
      for (int side = 0; side < 2; ++side) {
        const double p = psnr[(static_cast<size_t>(seg) * kRungs + rung) * 2 + side];
        if (std::isnan(p)) ok = false;
        mse[side] += std::pow(10.0, -p / 10) / segments;
        bytes[side] += fs::file_size(Bench::Output(side ? psnr_cli : psnr_ours, seg, rung));
      }
    }
    const double ours_db = -10 * std::log10(mse[0]);
    const double cli_db = -10 * std::log10(mse[1]);
    const bool within = ok && std::fabs(ours_db - cli_db) <= 0.1;
    quality_met = quality_met && within;
    const double seconds = segments * kSegmentSeconds;
    std::printf("| %s | %.3f | %.3f | %+.3f | %.0f | %.0f | %s |\n", kLadder[rung].name, ours_db,
                cli_db, ours_db - cli_db, bytes[0] * 8.0 / seconds / 1e3,
                bytes[1] * 8.0 / seconds / 1e3,
                ok ? (within ? "yes" : "NO") : "NOT MEASURED (see psnr logs)");
  }
  std::printf("\nQuality target (every rendition within 0.1 dB of the CLI): %s\n",
              quality_met ? "met" : "NOT met");
  std::printf("Load average after PSNR: %s\n", LoadAverage().c_str());
  if (!keep && work_dir.empty()) {
    std::error_code ec;
    fs::remove_all(b.dir, ec);
  } else {
    std::printf("Work dir kept: %s\n", b.dir.c_str());
  }
  return failed ? 1 : 0;
}

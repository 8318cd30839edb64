// A long transcoding session's memory: feeds one TranscodeSession the consecutive segments of a
// generated stream (default 10 minutes of 2-second segments) and samples the process's resident
// memory as it goes. The bound: after the first minute (allocator and codec pools warmed up),
// resident memory may not grow by more than --max-growth-mib. Exits 1 when it does.
//
//   build/bin/session_memory_bench --minutes 10
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/media/segmenter.h"
#include "orchestrator/serving/transcode_session.h"

namespace fs = std::filesystem;
namespace sy = switchyard;

namespace {

double ResidentMiB() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1 << 20);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Memory of one long transcoding session"};
  double minutes = 10;
  int width = 640, height = 360;
  double max_growth_mib = 16;
  app.add_option("--minutes", minutes, "Stream length")->capture_default_str();
  app.add_option("--width", width, "Source width")->capture_default_str();
  app.add_option("--height", height, "Source height")->capture_default_str();
  app.add_option("--max-growth-mib", max_growth_mib,
                 "Allowed growth of resident memory after the first minute")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);

  const fs::path dir = fs::temp_directory_path() / absl::StrCat("session_memory_bench.", getpid());
  fs::create_directories(dir);
  const fs::path source = dir / "stream.ts";
  // testsrc2 with a 2-second GOP and AAC audio, so segments cut at every keyframe.
  const std::string cmd = absl::StrCat(
      "ffmpeg -v error -y -f lavfi -i testsrc2=size=", width, "x", height,
      ":rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 -t ", minutes * 60,
      " -c:v libx264 -preset ultrafast -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p "
      "-c:a aac -b:a 64k -f mpegts ",
      source.string());
  if (std::system(cmd.c_str()) != 0) {
    std::cerr << "could not generate the source with the ffmpeg CLI (apt-get install ffmpeg)\n";
    return 2;
  }

  std::vector<sy::orchestrator::RenditionSpec> ladder(3);
  const int heights[] = {360, 240, 144};
  const int64_t bitrates[] = {800000, 400000, 200000};
  for (int i = 0; i < 3; ++i) {
    ladder[i].height = heights[i];
    ladder[i].bitrate_bps = bitrates[i];
    ladder[i].preset = "ultrafast";
  }
  auto session = sy::orchestrator::TranscodeSession::Create(ladder, {});
  if (!session.ok()) {
    std::cerr << session.status() << "\n";
    return 1;
  }

  std::cout << "## One session, " << minutes << " min of " << width << "x" << height
            << " 30 fps + AAC in 2 s segments, 3 renditions\n\n"
            << "| segments | stream minutes | resident MiB |\n|---|---|---|\n";
  const auto start = std::chrono::steady_clock::now();
  double after_first_minute = 0, peak = 0, last = 0;
  int64_t failures = 0;
  absl::Status st = sy::media::SplitIntoSegments(
      source.string(), 2.0,
      [&](std::string segment, const sy::media::SegmentInfo& info) -> absl::Status {
        auto result = (*session)->Transcode(info.index, segment);
        if (!result.ok()) ++failures;
        last = ResidentMiB();
        if (info.index == 29) after_first_minute = last;
        if (info.index >= 29) peak = std::max(peak, last);
        if ((info.index + 1) % 30 == 0) {
          std::cout << "| " << info.index + 1 << " | " << (info.index + 1) * 2 / 60.0 << " | "
                    << last << " |\n";
        }
        return absl::OkStatus();
      });
  fs::remove_all(dir);
  if (!st.ok()) {
    std::cerr << st << "\n";
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double growth = peak - after_first_minute;
  std::cout << "\nsegments: " << (*session)->segments_done() << " ok, " << failures
            << " failed; decoders opened " << (*session)->decoders_opened() << ", scalers created "
            << (*session)->scalers_created() << "; " << seconds << " s\n"
            << "resident after the first minute " << after_first_minute << " MiB, peak after it "
            << peak << " MiB, growth " << growth << " MiB (bound " << max_growth_mib << ")\n";
  return failures == 0 && growth <= max_growth_mib ? 0 : 1;
}

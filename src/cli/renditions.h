// The rendition ladder of `transcode` and `transcode-file`: the flags both take, the ladder built
// from them (ParseRendition, cli_commands.h) and the file names of the renditions written.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "switchyard/v1/gateway.pb.h"

namespace switchyard::cli::internal {

struct LadderFlags {
  std::string in;
  std::string out_dir;
  std::vector<std::string> renditions;
  std::string preset;
  std::string profile;
  double gop_seconds = 0;
  std::string fps;
  std::string stream_id;
  bool intra_only = false;
  std::string audio_codec;  // "" (gateway default: copy), "copy" or "aac"
  int64_t audio_bitrate_bps = 0;

  // --in, --out (a directory) and the repeated --rendition.
  void AddInOutLadder(CLI::App& c, const std::string& in_help, const std::string& ladder_help);
  // --preset, --profile, --intra-only, --audio, --audio-bitrate, --gop and --fps.
  void AddEncoding(CLI::App& c);

  // Parses and checks the ladder; applies the command-wide settings to each rendition.
  absl::StatusOr<std::vector<switchyard::v1::Rendition>> BuildLadder() const;

  // Output paths of the renditions, in ladder order: the name the gateway gave a rendition or its
  // RenditionBaseName, made safe, "-2", "-3", ... added on a collision.
  std::vector<std::filesystem::path> OutputPaths(
      const std::vector<switchyard::v1::Rendition>& ladder,
      const switchyard::v1::TranscodeResponse& result, absl::string_view extension) const;
};

}  // namespace switchyard::cli::internal

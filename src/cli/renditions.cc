// Rendition ladders on the command line: "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS]" (cli_commands.h), the
// ladder flags and the file names of the renditions written (renditions.h).
#include "cli/renditions.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli/cli_files.h"
#include "cli/cli_support.h"

namespace switchyard::cli {
namespace {

namespace fs = std::filesystem;
namespace v1 = switchyard::v1;

constexpr int kMaxDimension = 16384;
constexpr int kMaxRenditions = 8;

absl::Status BadRendition(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("invalid rendition \"", text, "\": ", why,
                   " (expected [NAME=]WIDTHxHEIGHT:BITRATE[@FPS], e.g. 1280x720:3000k)"));
}

}  // namespace

absl::StatusOr<int64_t> ParseBitrate(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid bitrate \"", text, "\": ", why, " (e.g. 800000, 3000k, 3M or 2.5M)"));
  };
  absl::string_view number = text;
  int64_t multiplier = 1;
  if (!number.empty()) {
    const char suffix = absl::ascii_tolower(static_cast<unsigned char>(number.back()));
    if (suffix == 'k') multiplier = 1000;
    if (suffix == 'm') multiplier = 1000 * 1000;
    if (multiplier != 1) number.remove_suffix(1);
  }
  if (number.empty()) return bad("no number");
  absl::string_view int_part = number;
  absl::string_view frac_part;
  if (const size_t dot = number.find('.'); dot != absl::string_view::npos) {
    int_part = number.substr(0, dot);
    frac_part = number.substr(dot + 1);
    if (frac_part.empty() || frac_part.size() > 6) return bad("bad decimal");
  }
  const auto all_digits = [](absl::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); });
  };
  if (int_part.empty() && frac_part.empty()) return bad("no number");
  if (!all_digits(int_part) || !all_digits(frac_part)) return bad("not a number");
  if (int_part.size() > 12) return bad("too large");
  int64_t whole = 0;
  if (!int_part.empty() && !absl::SimpleAtoi(int_part, &whole)) return bad("not a number");
  int64_t frac = 0;
  int64_t scale = 1;
  if (!frac_part.empty()) {
    if (!absl::SimpleAtoi(frac_part, &frac)) return bad("not a number");
    for (size_t i = 0; i < frac_part.size(); ++i) scale *= 10;
  }
  if ((frac * multiplier) % scale != 0) return bad("not a whole number of bits per second");
  const int64_t bps = whole * multiplier + frac * multiplier / scale;
  if (bps <= 0) return bad("must be positive");
  if (bps > int64_t{1000} * 1000 * 1000 * 1000) return bad("too large");
  return bps;
}

absl::StatusOr<std::pair<int32_t, int32_t>> ParseFps(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid frame rate \"", text, "\": ", why, " (e.g. 30, 30000/1001, 29.97)"));
  };
  int64_t num = 0;
  int64_t den = 1;
  if (const size_t slash = text.find('/'); slash != absl::string_view::npos) {
    if (!absl::SimpleAtoi(text.substr(0, slash), &num) ||
        !absl::SimpleAtoi(text.substr(slash + 1), &den)) {
      return bad("not N/D");
    }
  } else if (const size_t dot = text.find('.'); dot != absl::string_view::npos) {
    // The NTSC rates are written as decimals but mean N*1000/1001.
    if (text == "23.976" || text == "23.98") return std::pair<int32_t, int32_t>{24000, 1001};
    if (text == "29.97") return std::pair<int32_t, int32_t>{30000, 1001};
    if (text == "59.94") return std::pair<int32_t, int32_t>{60000, 1001};
    const absl::string_view int_part = text.substr(0, dot);
    const absl::string_view frac_part = text.substr(dot + 1);
    int64_t whole = 0;
    int64_t frac = 0;
    if (int_part.empty() || frac_part.empty() || frac_part.size() > 3 ||
        !absl::SimpleAtoi(int_part, &whole) || !absl::SimpleAtoi(frac_part, &frac) ||
        frac_part.front() == '+' || frac_part.front() == '-' || frac < 0) {
      return bad("not a decimal number");
    }
    den = 1;
    for (size_t i = 0; i < frac_part.size(); ++i) den *= 10;
    num = whole * den + frac;
  } else if (!absl::SimpleAtoi(text, &num)) {
    return bad("not a number");
  }
  if (num <= 0 || den <= 0) return bad("must be positive");
  const int64_t g = std::gcd(num, den);
  num /= g;
  den /= g;
  if (num > 1000 * den) return bad("too high");
  if (num > INT32_MAX || den > INT32_MAX) return bad("too large");
  return std::pair<int32_t, int32_t>{static_cast<int32_t>(num), static_cast<int32_t>(den)};
}

absl::StatusOr<v1::Rendition> ParseRendition(absl::string_view text) {
  v1::Rendition rendition;
  absl::string_view rest = text;
  if (const size_t eq = rest.find('='); eq != absl::string_view::npos) {
    const absl::string_view name = rest.substr(0, eq);
    if (!internal::IsSafeName(name)) {
      return BadRendition(text, "the name must be letters, digits, '.', '_' or '-'");
    }
    rendition.set_name(std::string(name));
    rest = rest.substr(eq + 1);
  }
  const size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) return BadRendition(text, "missing ':BITRATE'");
  const absl::string_view size = rest.substr(0, colon);
  absl::string_view rate = rest.substr(colon + 1);
  const size_t x = size.find_first_of("xX");
  if (x == absl::string_view::npos) return BadRendition(text, "the size must be WIDTHxHEIGHT");
  int32_t width = 0;
  int32_t height = 0;
  const absl::string_view w_text = size.substr(0, x);
  const absl::string_view h_text = size.substr(x + 1);
  const auto is_digits = [](absl::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
      return absl::ascii_isdigit(static_cast<unsigned char>(c));
    });
  };
  if (!is_digits(w_text) || !is_digits(h_text) || !absl::SimpleAtoi(w_text, &width) ||
      !absl::SimpleAtoi(h_text, &height)) {
    return BadRendition(text, "the size must be WIDTHxHEIGHT in pixels");
  }
  if (width > kMaxDimension || height > kMaxDimension) {
    return BadRendition(text, absl::StrCat("width and height must be at most ", kMaxDimension));
  }
  if (width == 0 && height == 0) return BadRendition(text, "width and height cannot both be 0");
  if (width % 2 != 0 || height % 2 != 0) return BadRendition(text, "width and height must be even");
  rendition.set_width(width);
  rendition.set_height(height);

  if (const size_t at = rate.find('@'); at != absl::string_view::npos) {
    absl::StatusOr<std::pair<int32_t, int32_t>> fps = ParseFps(rate.substr(at + 1));
    if (!fps.ok()) return BadRendition(text, fps.status().message());
    rendition.set_fps_num(fps->first);
    rendition.set_fps_den(fps->second);
    rate = rate.substr(0, at);
  }
  absl::StatusOr<int64_t> bps = ParseBitrate(rate);
  if (!bps.ok()) return BadRendition(text, bps.status().message());
  rendition.set_bitrate_bps(*bps);
  return rendition;
}

std::string RenditionBaseName(const v1::Rendition& rendition, int actual_height, int index) {
  if (!rendition.name().empty()) return rendition.name();
  const int height = rendition.height() > 0 ? rendition.height() : actual_height;
  if (height > 0) return absl::StrCat(height, "p");
  return absl::StrCat("rendition", index + 1);
}

namespace internal {

void LadderFlags::AddInOutLadder(CLI::App& c, const std::string& in_help,
                                 const std::string& ladder_help) {
  c.add_option("--in", in, in_help)->required();
  c.add_option("--out", out_dir, "Output directory (created when missing)")->required();
  c.add_option("--rendition", renditions, ladder_help)->required()->allow_extra_args(false);
}

void LadderFlags::AddEncoding(CLI::App& c) {
  c.add_option("--preset", preset, "libx264 preset (gateway default: veryfast)")
      ->check(CLI::IsMember({"ultrafast", "superfast", "veryfast", "faster", "fast", "medium",
                             "slow", "slower", "veryslow", "placebo"}));
  c.add_option("--profile", profile, "H.264 profile (gateway default: main)")
      ->check(CLI::IsMember({"baseline", "main", "high"}));
  c.add_flag("--intra-only", intra_only, "Every frame a keyframe (ignores --gop)");
  c.add_option("--audio", audio_codec,
               "Audio in the renditions: copy, or aac to re-encode (gateway default: copy)")
      ->check(CLI::IsMember({"copy", "aac"}));
  c.add_option("--audio-bitrate", audio_bitrate_bps,
               "AAC bitrate in bit/s with --audio aac (default 128000)")
      ->check(CLI::Range(int64_t{8000}, int64_t{512000}));
  c.add_option("--gop", gop_seconds, "Keyframe interval in seconds (0: encoder default, 2 s)");
  c.add_option("--fps", fps,
               "Output frame rate N or N/D for renditions without @FPS (default: input's)");
}

absl::StatusOr<std::vector<v1::Rendition>> LadderFlags::BuildLadder() const {
  if (renditions.empty()) return absl::InvalidArgumentError("at least one --rendition is required");
  if (static_cast<int>(renditions.size()) > kMaxRenditions) {
    return absl::InvalidArgumentError(
        absl::StrCat("at most ", kMaxRenditions, " renditions, got ", renditions.size()));
  }
  std::pair<int32_t, int32_t> rate = {0, 0};
  if (!fps.empty()) {
    absl::StatusOr<std::pair<int32_t, int32_t>> parsed = ParseFps(fps);
    if (!parsed.ok()) return parsed.status();
    rate = *parsed;
  }
  if (!std::isfinite(gop_seconds) || gop_seconds < 0) {
    return absl::InvalidArgumentError("--gop must be a non-negative number of seconds");
  }
  std::vector<v1::Rendition> ladder;
  std::set<std::string> names;
  for (const std::string& text : renditions) {
    absl::StatusOr<v1::Rendition> rendition = ParseRendition(text);
    if (!rendition.ok()) return rendition.status();
    if (rendition->fps_num() == 0 && rate.first > 0) {
      rendition->set_fps_num(rate.first);
      rendition->set_fps_den(rate.second);
    }
    rendition->set_gop_seconds(gop_seconds);
    rendition->set_intra_only(intra_only);
    rendition->set_preset(preset);
    rendition->set_profile(profile);
    // Names known before the call must not collide (height 0 renditions are named later).
    if (!rendition->name().empty() || rendition->height() > 0) {
      const std::string name = RenditionBaseName(*rendition, 0, 0);
      if (!names.insert(name).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("two renditions would both be named ", Quote(name),
                         "; give them distinct names, e.g. --rendition hi=1280x720:3000k"));
      }
    }
    ladder.push_back(*std::move(rendition));
  }
  return ladder;
}

std::vector<fs::path> LadderFlags::OutputPaths(const std::vector<v1::Rendition>& ladder,
                                               const v1::TranscodeResponse& result,
                                               absl::string_view extension) const {
  std::set<std::string> used;
  std::vector<fs::path> paths;
  for (int i = 0; i < result.renditions_size(); ++i) {
    const v1::RenditionResult& r = result.renditions(i);
    v1::Rendition effective = ladder[i];
    if (!r.rendition().name().empty()) effective.set_name(r.rendition().name());
    const std::string name = SanitizeName(RenditionBaseName(effective, r.height(), i));
    std::string base = name;
    for (int n = 2; !used.insert(base).second; ++n) base = absl::StrCat(name, "-", n);
    paths.push_back(fs::path(out_dir) / absl::StrCat(base, extension));
  }
  return paths;
}
}  // namespace internal

}  // namespace switchyard::cli

// Rendition ladders on the command line: "[NAME=]WIDTHxHEIGHT:BITRATE[@FPS]", and the file names
// of the renditions written.
#include <algorithm>
#include <cstdint>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/cli_commands.h"
#include "cli/cli_files.h"

namespace switchyard::cli {
namespace {

namespace v1 = switchyard::v1;

constexpr int kMaxDimension = 16384;

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

}  // namespace switchyard::cli

// The segment-anything-2 job: point, box and mask prompts in, masks, scores and logits out
// (job_command.h says what a Job is).
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/cli_files.h"
#include "cli/job_command.h"
#include "common/status.h"

namespace switchyard::cli::internal {

namespace v1 = switchyard::v1;

namespace {

// SAM2's low-resolution mask prompt is 1x256x256.
constexpr int kMaskInputValues = 256 * 256;

// Parses "A,B,..." into finite numbers.
absl::StatusOr<std::vector<float>> ParseNumbers(absl::string_view text) {
  std::vector<float> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    float v = 0;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(Quote(part), " is not a number"));
    }
    values.push_back(v);
  }
  return values;
}

// ": <why>" when parsing failed, for the end of a message.
std::string Why(const absl::StatusOr<std::vector<float>>& parsed) {
  return parsed.ok() ? "" : absl::StrCat(": ", parsed.status().message());
}

// The shape of a nested JSON array, e.g. [[[..]]] of 3x4x5 -> {3, 4, 5}.
std::vector<size_t> JsonShape(const Json& json) {
  std::vector<size_t> shape;
  const Json* level = &json;
  while (level->is_array()) {
    shape.push_back(level->size());
    if (level->empty()) break;
    level = &(*level)[0];
  }
  return shape;
}

void FlattenNumbers(const Json& json, std::vector<float>* out, bool* ok) {
  if (json.is_array()) {
    for (const Json& item : json) FlattenNumbers(item, out, ok);
  } else if (json.is_number()) {
    out->push_back(json.get<float>());
  } else {
    *ok = false;
  }
}

// A JSON-encoded field of the response, parsed; null when empty, the raw string when it is not
// JSON (the gateway's contract is JSON, but the CLI should still show what came back).
Json ParseJsonField(const std::string& text) {
  if (text.empty()) return nullptr;
  Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  return parsed.is_discarded() ? Json(text) : parsed;
}

}  // namespace

template <>
struct Job<v1::SegmentAnything2Request> : ModelInFlags {
  static constexpr char kDescription[] = "Segment an image from point or box prompts into masks";
  static constexpr auto kMethod = &v1::Gateway::Stub::SegmentAnything2;
  std::string out;
  std::vector<std::string> points;
  std::string box;
  std::string mask_input;
  bool single_mask = false;
  bool no_logits = false;
  bool no_normalize = false;

  void AddOptions(CLI::App& c) {
    AddModelIn(c, "Input image (PNG or JPEG)");
    c.add_option("--point", points,
                 "Point prompt X,Y[,LABEL] in pixels, LABEL 1 foreground (default) or 0 "
                 "background; repeat for several")
        ->allow_extra_args(false);
    c.add_option("--box", box, "Box prompt X0,Y0,X1,Y1 in pixels");
    c.add_option("--mask-input", mask_input,
                 "JSON file with a previous low-resolution mask (1x256x256 numbers)");
    c.add_option("--out", out, "Write masks, scores and logits to this JSON file");
    c.add_flag("--single-mask", single_mask, "One mask instead of three (multimask off)");
    c.add_flag("--no-logits", no_logits, "Thresholded masks instead of raw logits");
    c.add_flag("--no-normalize-coords", no_normalize, "Do not normalise point coordinates");
  }

  absl::StatusOr<v1::SegmentAnything2Request> BuildRequest() const {
    absl::StatusOr<v1::SegmentAnything2Request> built =
        RequestWithImage<v1::SegmentAnything2Request>();
    if (!built.ok()) return built;
    v1::SegmentAnything2Request& request = *built;
    if (points.empty() && box.empty()) {
      return absl::InvalidArgumentError(
          "give at least one --point X,Y[,LABEL] or a --box X0,Y0,X1,Y1");
    }
    for (const std::string& point : points) {
      absl::StatusOr<std::vector<float>> v = ParseNumbers(point);
      const bool ok = v.ok() && (v->size() == 2 || v->size() == 3) &&
                      (v->size() == 2 || (*v)[2] == 0 || (*v)[2] == 1);
      if (!ok) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid --point ", Quote(point),
                         ": expected X,Y or X,Y,LABEL (LABEL 1 foreground, 0 background)", Why(v)));
      }
      request.add_point_coords((*v)[0]);
      request.add_point_coords((*v)[1]);
      request.add_point_labels(v->size() == 3 ? static_cast<int32_t>((*v)[2]) : 1);
    }
    if (!box.empty()) {
      absl::StatusOr<std::vector<float>> v = ParseNumbers(box);
      if (!v.ok() || v->size() != 4 || (*v)[2] < (*v)[0] || (*v)[3] < (*v)[1]) {
        return absl::InvalidArgumentError(
            absl::StrCat("invalid --box ", Quote(box),
                         ": expected X0,Y0,X1,Y1 with X1 >= X0, Y1 >= Y0", Why(v)));
      }
      for (float f : *v) request.add_box(f);
    }
    if (!mask_input.empty()) {
      absl::StatusOr<std::string> text = ReadInputFile(mask_input, "mask input");
      if (!text.ok()) return text.status();
      const Json json = Json::parse(*text, nullptr, /*allow_exceptions=*/false);
      std::vector<float> values;
      bool ok = !json.is_discarded();
      if (ok) FlattenNumbers(json, &values, &ok);
      if (!ok || values.size() != kMaskInputValues) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--mask-input ", Quote(mask_input), " must be a JSON array of ", kMaskInputValues,
            " numbers (1x256x256)", ok ? absl::StrCat(", got ", values.size()) : ""));
      }
      for (float f : values) request.add_mask_input(f);
    }
    if (single_mask) request.set_multimask_output(false);
    if (no_logits) request.set_return_logits(false);
    if (no_normalize) request.set_normalize_coords(false);
    if (!out.empty()) SY_RETURN_IF_ERROR(CheckWritableFile(out));
    return built;
  }

  int Report(const GlobalOptions& global, const v1::MasksResponse& response, double elapsed_ms,
             std::ostream& o, std::ostream& err) const {
    Json result = {{"masks", ParseJsonField(response.masks())},
                   {"scores", ParseJsonField(response.scores())},
                   {"logits", ParseJsonField(response.logits())}};
    if (!out.empty()) {
      if (absl::Status st = WriteFileAtomically(out, result.dump() + "\n"); !st.ok()) {
        return ReportUsageError(st, err);
      }
    }
    const std::vector<size_t> shape = JsonShape(result["masks"]);
    if (global.json) {
      result["mask_shape"] = shape;
      if (!out.empty()) result["output"] = out;
      result["request_id"] = global.request_id;
      result["elapsed_ms"] = elapsed_ms;
      result["job"] = JobToJson(response.job());
      PrintJson(result, o);
      return kExitOk;
    }
    const size_t masks = shape.empty() ? 0 : shape[0];
    o << masks << (masks == 1 ? " mask" : " masks");
    if (shape.size() == 3) o << " of " << shape[2] << "x" << shape[1];
    o << ", scores " << response.scores();
    if (!out.empty()) o << " -> " << out;
    o << "\n" << JobLine(pipelines::kSegmentAnything2, response.job(), model) << "\n";
    return kExitOk;
  }
};

template CommandPtr NewJobCommand<v1::SegmentAnything2Request>();
template QuotePartPtr NewQuotePart<v1::SegmentAnything2Request>();

}  // namespace switchyard::cli::internal

// What the model converters (ncnn, TF.js, waifu2x) share: writing TorchScript source safely,
// reading their input files under a size limit, compiling the generated module, and keeping
// exceptions from escaping. One copy, so a fix (e.g. to identifier escaping) reaches them all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <torch/script.h>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace switchyard::runner::convert {

// `s` in single quotes, for naming a layer, blob or weight in an error message.
std::string Quote(absl::string_view s);

// `s` made safe for a TorchScript identifier: characters other than [A-Za-z0-9] become '_', and
// an empty or digit-led result gets the prefix "l_". (Model files name layers freely.)
std::string Identifier(absl::string_view s);

// `s` made safe for a one-line TorchScript comment: non-printable or non-ASCII bytes become '?'
// (a newline from a hostile file would otherwise end the comment and inject code).
std::string CommentText(absl::string_view s);

// A double as TorchScript source that reads back to the same value (always a float literal).
std::string FloatLiteral(double v);

// Reads the whole of `path`, refusing a file over `max_bytes` before reading any of it (its size
// is checked first, then exactly that many bytes are read). `what` names the file in messages.
// NOT_FOUND for a missing or unopenable file, INVALID_ARGUMENT ("... more than the limit of ...")
// for an oversized one, DATA_LOSS for a short read.
absl::StatusOr<std::string> ReadFileLimited(const std::filesystem::path& path,
                                            absl::string_view what, int64_t max_bytes);

// Builds the converted module: registers `params` (in order) and the int attribute `scale`,
// compiles `source` (TorchScript methods) into it and puts it in eval mode. A compile failure is
// the converter's bug, so it is INTERNAL, naming `model_path` and quoting the source.
absl::StatusOr<torch::jit::Module> BuildModule(
    const std::string& class_name, const std::vector<std::pair<std::string, torch::Tensor>>& params,
    int64_t scale, const std::string& source, const std::filesystem::path& model_path);

// Runs `convert` and turns any exception it throws (libtorch's c10::Error, std::exception or
// anything else) into INTERNAL naming `model_path`: the converters promise no exception escapes.
absl::StatusOr<torch::jit::Module> NoExceptions(
    const std::filesystem::path& model_path,
    absl::FunctionRef<absl::StatusOr<torch::jit::Module>()> convert);

// What the tools report of a module they saved.
struct SavedModule {
  int64_t parameters = 0;
  int64_t values = 0;  // over all parameters
  int64_t scale = 1;   // the module's `scale` attribute
};

// Saves a converted module to `out_path` (creating its folder) atomically: to a .tmp beside it,
// then a rename, so a failed run leaves no half-written model for the model directory to load.
// INTERNAL "cannot write <out_path>: <reason>" on failure.
absl::StatusOr<SavedModule> SaveModule(torch::jit::Module& module,
                                       const std::filesystem::path& out_path);

}  // namespace switchyard::runner::convert

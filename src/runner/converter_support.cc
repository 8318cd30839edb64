#include "runner/converter_support.h"

#include <cstdio>
#include <exception>
#include <fstream>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace switchyard::runner::convert {

std::string Quote(absl::string_view s) { return absl::StrCat("'", s, "'"); }

std::string Identifier(absl::string_view s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    out += ok ? c : '_';
  }
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out = "l_" + out;
  return out;
}

std::string CommentText(absl::string_view s) {
  std::string out;
  for (char c : s) out += (c >= 0x20 && c < 0x7f) ? c : '?';
  return out;
}

std::string FloatLiteral(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  std::string s = buf;
  // "1" would be an int in TorchScript; "nan"/"inf" are left as they are (callers check).
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}

absl::StatusOr<std::string> ReadFileLimited(const std::filesystem::path& path,
                                            absl::string_view what, int64_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(what, " not found: ", path.string()));
  }
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot stat ", what, ": ", path.string()));
  // Checked before reading: a hostile file must not make us allocate its size.
  if (size > static_cast<std::uintmax_t>(max_bytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path.string(), ": ", what, " is ", size,
                                                   " bytes, more than the limit of ", max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", what, ": ", path.string()));
  std::string data(static_cast<size_t>(size), '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (in.gcount() != static_cast<std::streamsize>(size)) {
    return absl::DataLossError(absl::StrCat("error reading ", what, ": ", path.string()));
  }
  return data;
}

absl::StatusOr<torch::jit::Module> BuildModule(
    const std::string& class_name, const std::vector<std::pair<std::string, torch::Tensor>>& params,
    int64_t scale, const std::string& source, const std::filesystem::path& model_path) {
  torch::jit::Module module(class_name);
  for (const auto& [name, tensor] : params) module.register_parameter(name, tensor, false);
  module.register_attribute("scale", c10::IntType::get(), c10::IValue(scale));
  try {
    module.define(source);
  } catch (const c10::Error& e) {
    return absl::InternalError(absl::StrCat(
        model_path.string(),
        ": generated TorchScript does not compile: ", e.what_without_backtrace(), "\n", source));
  }
  module.eval();
  return module;
}

absl::StatusOr<torch::jit::Module> NoExceptions(
    const std::filesystem::path& model_path,
    absl::FunctionRef<absl::StatusOr<torch::jit::Module>()> convert) {
  try {
    return convert();
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat(model_path.string(), ": libtorch error: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(model_path.string(), ": ", e.what()));
  } catch (...) {
    return absl::InternalError(absl::StrCat(model_path.string(), ": unknown error"));
  }
}

absl::StatusOr<SavedModule> SaveModule(torch::jit::Module& module,
                                       const std::filesystem::path& out_path) {
  try {
    SavedModule saved;
    for (const auto& p : module.parameters()) {
      ++saved.parameters;
      saved.values += p.numel();
    }
    saved.scale = module.attr("scale").toInt();
    if (out_path.has_parent_path()) std::filesystem::create_directories(out_path.parent_path());
    const std::filesystem::path tmp = out_path.string() + ".tmp";
    module.save(tmp.string());
    std::filesystem::rename(tmp, out_path);
    return saved;
  } catch (const c10::Error& e) {
    return absl::InternalError(
        absl::StrCat("cannot write ", out_path.string(), ": ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("cannot write ", out_path.string(), ": ", e.what()));
  }
}

}  // namespace switchyard::runner::convert

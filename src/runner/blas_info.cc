#include "runner/blas_info.h"

#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace switchyard::runner {

BlasInfo ClassifyBlas(const std::string& library, const std::string& openblas_config) {
  BlasInfo info;
  info.library = library;
  info.config = openblas_config;
  if (library.empty()) return info;
  const std::string lower = absl::AsciiStrToLower(library);
  if (!openblas_config.empty() || absl::StrContains(lower, "openblas")) {
    info.name = "OpenBLAS";
  } else if (absl::StrContains(lower, "mkl")) {
    info.name = "MKL";
  } else if (absl::StrContains(lower, "blis")) {
    info.name = "BLIS";
  } else if (absl::StrContains(lower, "atlas")) {
    info.name = "ATLAS";
  } else if (absl::StrContains(lower, "/blas/libblas.so")) {
    // Debian's reference BLAS (package libblas3) lives in .../<triplet>/blas/.
    info.name = "reference BLAS";
    info.reference = true;
  } else {
    info.name = "unknown";
  }
  return info;
}

BlasInfo DescribeBlas() {
  // RTLD_DEFAULT: libtorch's own dependency (libblas.so.3) is in the global scope.
  void* sgemm = dlsym(RTLD_DEFAULT, "sgemm_");
  if (sgemm == nullptr) return BlasInfo{};
  Dl_info dl{};
  std::string library;
  std::string config;
  if (dladdr(sgemm, &dl) != 0 && dl.dli_fname != nullptr) {
    library = dl.dli_fname;
    // libblas.so.3 is a chain of alternatives symlinks: the target says which BLAS it is.
    std::unique_ptr<char, decltype(&std::free)> real(realpath(dl.dli_fname, nullptr), &std::free);
    if (real != nullptr) library = real.get();
    // OpenBLAS's version string, asked of the library that holds sgemm_ only: another library in
    // the process (e.g. an OpenBLAS liblapack.so.3) may export one while sgemm_ is the reference.
    if (void* handle = dlopen(dl.dli_fname, RTLD_LAZY | RTLD_NOLOAD); handle != nullptr) {
      using ConfigFn = char* (*)();
      if (auto* get_config = reinterpret_cast<ConfigFn>(dlsym(handle, "openblas_get_config"))) {
        if (const char* c = get_config(); c != nullptr) config = c;
      }
      dlclose(handle);
    }
  }
  if (library.empty()) library = "(unknown library)";
  return ClassifyBlas(library, config);
}

std::string BlasSummary(const BlasInfo& info) {
  if (info.name.empty()) return "no external BLAS loaded (libtorch's own GEMM)";
  std::string out = info.name;
  if (!info.config.empty()) absl::StrAppend(&out, " (", info.config, ")");
  absl::StrAppend(&out, " at ", info.library);
  return out;
}

}  // namespace switchyard::runner

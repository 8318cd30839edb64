// Which BLAS libtorch's float32 matrix products run on. libtorch from Debian calls whatever
// libblas.so.3 resolves to (the alternatives system): Debian's reference BLAS unless an optimized
// one (OpenBLAS: libopenblas0-openmp, which scripts/install-deps installs) is present. On the
// reference BLAS, linear layers (LLMs, Whisper) and single-threaded 1x1 convolutions run several
// times slower (docs/performance.md), so the orchestrator says so at start.
#pragma once

#include <string>

namespace switchyard::runner {

struct BlasInfo {
  // "OpenBLAS", "MKL", "BLIS", "ATLAS", "reference BLAS", or "unknown" (found, not recognised).
  // Empty when no sgemm_ is loaded in the process (a libtorch that bundles its own GEMM).
  std::string name;
  std::string library;     // the real path of the library that provides sgemm_
  std::string config;      // OpenBLAS's openblas_get_config(), e.g. its version and threading
  bool reference = false;  // Debian's unoptimized reference implementation
};

// Names the BLAS from a library path and OpenBLAS's config string (empty when the library has no
// openblas_get_config). Pure, for tests; DescribeBlas() asks the running process.
BlasInfo ClassifyBlas(const std::string& library, const std::string& openblas_config);

// The BLAS of this process: the library that provides sgemm_ (dlsym + dladdr, symlinks resolved).
BlasInfo DescribeBlas();

// One line for the logs: "OpenBLAS (0.3.21 ... ) at /usr/lib/...".
std::string BlasSummary(const BlasInfo& info);

}  // namespace switchyard::runner

#include "runner/blas_info.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <gtest/gtest.h>
#include <torch/script.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace switchyard::runner {
namespace {

TEST(ClassifyBlasTest, DebiansReferenceBlasIsFlagged) {
  const BlasInfo info = ClassifyBlas("/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0", "");
  EXPECT_EQ(info.name, "reference BLAS");
  EXPECT_TRUE(info.reference);
  EXPECT_EQ(BlasSummary(info),
            "reference BLAS at /usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0");
}

TEST(ClassifyBlasTest, OptimizedBlasesAreNamed) {
  const BlasInfo openblas = ClassifyBlas("/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3",
                                         "OpenBLAS 0.3.21 DYNAMIC_ARCH");
  EXPECT_EQ(openblas.name, "OpenBLAS");
  EXPECT_FALSE(openblas.reference);
  EXPECT_EQ(BlasSummary(openblas),
            "OpenBLAS (OpenBLAS 0.3.21 DYNAMIC_ARCH) at "
            "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3");
  // Found by its path even without the config symbol.
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3", "").name,
            "OpenBLAS");
  EXPECT_EQ(ClassifyBlas("/opt/intel/oneapi/mkl/lib/libmkl_rt.so.2", "").name, "MKL");
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/blis-openmp/libblas.so.3", "").name, "BLIS");
  EXPECT_EQ(ClassifyBlas("/usr/lib/x86_64-linux-gnu/atlas/libblas.so.3", "").name, "ATLAS");
  const BlasInfo other = ClassifyBlas("/opt/vendor/libfastblas.so", "");
  EXPECT_EQ(other.name, "unknown");
  EXPECT_FALSE(other.reference);
}

TEST(ClassifyBlasTest, NoLibraryMeansNoExternalBlas) {
  const BlasInfo none = ClassifyBlas("", "");
  EXPECT_TRUE(none.name.empty());
  EXPECT_FALSE(none.reference);
  EXPECT_EQ(BlasSummary(none), "no external BLAS loaded (libtorch's own GEMM)");
}

// This process links Debian's libtorch, which calls libblas.so.3: the library found is a real
// file and the one the dynamic linker resolved (scripts/install-deps installs OpenBLAS, which
// then takes libblas.so.3 over from the reference BLAS).
TEST(DescribeBlasTest, FindsTheLibraryThatLibtorchCalls) {
  // A float32 matrix product through libtorch, so the BLAS is certainly loaded and used.
  const at::Tensor a = at::ones({64, 64});
  EXPECT_FLOAT_EQ(at::mm(a, a)[0][0].item<float>(), 64.0f);
  const BlasInfo info = DescribeBlas();
  if (info.name.empty()) GTEST_SKIP() << "this libtorch has no external sgemm_";
  EXPECT_TRUE(std::filesystem::is_regular_file(info.library)) << info.library;
  EXPECT_EQ(info.reference, info.name == "reference BLAS");
  // OpenBLAS's version string comes from the library that holds sgemm_, nowhere else.
  if (!info.config.empty()) {
    EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(info.library), "openblas"))
        << info.library << " with config " << info.config;
  }
  // Set by the CTest entry that puts Debian's reference libblas.so.3 in front (LD_LIBRARY_PATH).
  if (const char* expect = std::getenv("SWITCHYARD_EXPECT_REFERENCE_BLAS");
      expect != nullptr && std::string(expect) == "1") {
    EXPECT_TRUE(info.reference) << BlasSummary(info);
    EXPECT_TRUE(info.config.empty()) << BlasSummary(info);
  }
  std::cout << "BLAS: " << BlasSummary(info) << "\n";
}

}  // namespace
}  // namespace switchyard::runner

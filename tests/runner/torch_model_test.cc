// Unit tests for TorchModel, ResolveDevice and ConfigureTorchThreads (runner/torch_model.h).
// Every model is a tiny TorchScript module built here with libtorch's C++ API and saved into a
// temporary directory.
#include "runner/torch_model.h"

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include "support/media_fixtures.h"
#include "support/tiny_torch_models.h"

namespace switchyard::runner {
namespace {

using ::switchyard::testing::SaveTestModule;
using ::switchyard::testing::TempDir;
using ::switchyard::testing::WriteFile;
using ::testing::HasSubstr;

constexpr const char* kDouble = ::switchyard::testing::kDoubleSource;

class TorchModelTest : public ::testing::Test {
 protected:
  TorchModelPtr Build(const std::string& name, const std::string& source) {
    return ::switchyard::testing::SaveAndLoadTestModule(dir_.path(), name, source);
  }

  TempDir dir_;
};

// ---------------------------------------------------------------------------------------------
// Load

TEST_F(TorchModelTest, LoadMissingFileIsNotFound) {
  auto model = TorchModel::Load(dir_.path() / "missing.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kNotFound) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("missing.pt"));
}

TEST_F(TorchModelTest, LoadDirectoryIsNotFound) {
  auto model = TorchModel::Load(dir_.path(), "cpu");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound) << model.status();
}

TEST_F(TorchModelTest, LoadGarbageIsInvalidArgument) {
  WriteFile(dir_.path() / "garbage.pt", "this is not a zip archive at all");
  auto model = TorchModel::Load(dir_.path() / "garbage.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("garbage.pt"));

  WriteFile(dir_.path() / "empty.pt", "");
  EXPECT_EQ(TorchModel::Load(dir_.path() / "empty.pt", "cpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, LoadModuleWithoutForwardIsInvalidArgument) {
  SaveTestModule(dir_.path() / "noforward.pt", R"(
def helper(self, x):
    return x
)");
  auto model = TorchModel::Load(dir_.path() / "noforward.pt", "cpu");
  ASSERT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument) << model.status();
  EXPECT_THAT(model.status().message(), HasSubstr("forward"));
}

TEST_F(TorchModelTest, LoadWithBadDeviceFails) {
  SaveTestModule(dir_.path() / "double.pt", kDouble);
  EXPECT_EQ(TorchModel::Load(dir_.path() / "double.pt", "tpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, LoadKeepsPathAndDevice) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->path(), dir_.path() / "double.pt");
  EXPECT_TRUE(model->device().is_cpu());
}

// ---------------------------------------------------------------------------------------------
// Forward

TEST_F(TorchModelTest, ForwardComputesValues) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::tensor({1.0f, -2.5f, 3.0f}));
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->device().is_cpu());
  EXPECT_TRUE(torch::equal(*out, torch::tensor({2.0f, -5.0f, 6.0f}))) << *out;
}

TEST_F(TorchModelTest, ForwardUsesParametersAndAttributes) {
  auto model = Build("affine", R"(
def forward(self, x):
    return x * self.scale + self.weight * self.ratio
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::full({1, 3, 2, 2}, 2.0f));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->sizes(), (std::vector<int64_t>{1, 3, 2, 2}));
  EXPECT_TRUE(torch::allclose(*out, torch::full({1, 3, 2, 2}, 8.5f))) << *out;
}

TEST_F(TorchModelTest, ForwardReturningTupleIsInvalidArgument) {
  auto model = Build("tuple", R"(
def forward(self, x):
    return (x, x)
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({2}));
  ASSERT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("not a tensor"));
}

TEST_F(TorchModelTest, ForwardReturningIntIsInvalidArgument) {
  auto model = Build("int", R"(
def forward(self, x):
    return 3
)");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->Forward(torch::ones({2})).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TorchModelTest, ForwardShapeErrorIsAnErrorNotACrash) {
  auto model = Build("mm", R"(
def forward(self, x):
    return torch.mm(x, x)
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({3}));  // mm needs 2-D
  EXPECT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("mm.pt"));
  // The model still works for a valid input afterwards.
  auto ok = model->Forward(torch::eye(2));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(torch::equal(*ok, torch::eye(2)));
}

TEST_F(TorchModelTest, ForwardThatRaisesIsAnErrorNotACrash) {
  auto model = Build("raise", R"(
def forward(self, x):
    if bool(x.sum() > 0.0):
        raise Exception("boom")
    return x
)");
  ASSERT_NE(model, nullptr);
  auto out = model->Forward(torch::ones({2}));
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal) << out.status();
  EXPECT_THAT(out.status().message(), HasSubstr("boom"));
  EXPECT_TRUE(model->Forward(torch::zeros({2})).ok());
}

TEST_F(TorchModelTest, ForwardFromSeveralThreads) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        const float v = static_cast<float>(t * 100 + i);
        auto out = model->Forward(torch::full({1, 3, 4, 4}, v));
        if (!out.ok() || !torch::equal(*out, torch::full({1, 3, 4, 4}, 2 * v))) ++wrong;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
}

// ---------------------------------------------------------------------------------------------
// IntAttribute

TEST_F(TorchModelTest, IntAttribute) {
  auto model = Build("double", kDouble);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->IntAttribute("scale"), std::optional<int64_t>(4));
  EXPECT_EQ(model->IntAttribute("missing"), std::nullopt);
  EXPECT_EQ(model->IntAttribute("ratio"), std::nullopt);     // float
  EXPECT_EQ(model->IntAttribute("weight"), std::nullopt);    // tensor parameter
  EXPECT_EQ(model->IntAttribute("training"), std::nullopt);  // bool
}

// ---------------------------------------------------------------------------------------------
// ResolveDevice and ConfigureTorchThreads

TEST(ResolveDeviceTest, Cpu) {
  auto d = ResolveDevice("cpu");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_cpu());
}

TEST(ResolveDeviceTest, AutoPicksCudaOnlyWhenAvailable) {
  auto d = ResolveDevice("auto");
  ASSERT_TRUE(d.ok()) << d.status();
  if (torch::cuda::is_available()) {
    EXPECT_TRUE(d->is_cuda());
    EXPECT_EQ(d->index(), 0);
  } else {
    EXPECT_TRUE(d->is_cpu());
  }
}

TEST(ResolveDeviceTest, MalformedSpecsAreInvalidArgument) {
  for (const char* spec :
       {"bogus", "", "CPU", "gpu", "cuda:x", "cuda:", "cuda:-1", "cuda:1x", "cuda0", " cpu"}) {
    auto d = ResolveDevice(spec);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument) << "'" << spec << "'";
    EXPECT_THAT(d.status().message(), HasSubstr(spec)) << "'" << spec << "'";
  }
}

TEST(ResolveDeviceTest, CudaWithoutCudaIsUnavailable) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has CUDA";
  for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
    auto d = ResolveDevice(spec);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << spec << ": " << d.status();
  }
}

TEST(ResolveDeviceTest, CudaIndexBeyondDeviceCountIsUnavailable) {
  EXPECT_EQ(ResolveDevice("cuda:4096").status().code(), absl::StatusCode::kUnavailable);
}

// Process-global: the first call uses 0/0 (keep libtorch's defaults) so nothing else in this
// binary is affected; every later call with other sizes must be refused.
TEST(ConfigureTorchThreadsTest, SameValuesAgainOkDifferentValuesRefused) {
  ASSERT_TRUE(ConfigureTorchThreads(0, 0).ok());
  EXPECT_TRUE(ConfigureTorchThreads(0, 0).ok());
  EXPECT_EQ(ConfigureTorchThreads(2, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ConfigureTorchThreads(0, 1).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ConfigureTorchThreads(1, 0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(ConfigureTorchThreads(0, 0).ok());
}

}  // namespace
}  // namespace switchyard::runner

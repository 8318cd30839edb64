// The node's side of a hardware challenge (runner/hardware_challenge.h): libtorch's products, made
// from index arithmetic on the device, digest to exactly what the gateway's plain C++ reference
// (common/hardware_challenge.h) computes, for every matrix, on this machine's CPU.
#include "runner/hardware_challenge.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>

#include "common/hardware_challenge.h"

namespace switchyard::runner {
namespace {

node::v1::HardwareChallengeRequest Request(int matrices, int size) {
  node::v1::HardwareChallengeRequest r;
  r.set_seed("a seed of the gateway, 32 bytes.");
  r.set_matrices(matrices);
  r.set_size(size);
  return r;
}

TEST(RunHardwareChallengeTest, EveryDigestIsTheReferences) {
  for (auto [matrices, size] : {std::pair{3, 8}, std::pair{5, 13}, std::pair{4, 256}}) {
    const auto request = Request(matrices, size);
    auto answer = RunHardwareChallenge(request, "cpu");
    ASSERT_TRUE(answer.ok()) << answer.status();
    EXPECT_EQ(answer->device, "cpu");
    ASSERT_EQ(answer->digests.size(), static_cast<size_t>(matrices));
    for (int m = 0; m < matrices; ++m) {
      EXPECT_EQ(answer->digests[m], ReferenceChallengeDigest(request, m))
          << matrices << " x " << size << ", matrix " << m;
    }
  }
}

// The GPU workload (8 x 1024^3) on this CPU: right, and slow enough that the gateway's 500 ms
// window tells it from a GPU (printed; the check is in the integration test).
TEST(RunHardwareChallengeTest, TheGpuWorkloadOnThisCpu) {
  const auto request = Request(8, 1024);
  const auto start = std::chrono::steady_clock::now();
  auto answer = RunHardwareChallenge(request, "cpu");
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->digests.size(), 8u);
  EXPECT_EQ(answer->digests[5], ReferenceChallengeDigest(request, 5));
  std::printf("HARDWARE-CHALLENGE: 8 products of 1024x1024 on this CPU in %.0f ms\n", ms);
}

TEST(RunHardwareChallengeTest, BadRequestsAndDevicesAreStatuses) {
  EXPECT_EQ(RunHardwareChallenge(Request(0, 8), "cpu").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RunHardwareChallenge(Request(1, 8), "tpu").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace switchyard::runner

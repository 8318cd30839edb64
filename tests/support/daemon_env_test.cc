// The Daemon launcher used by every integration test: a sanitizer report from a daemon names the
// test that started it (scripts/test --sanitize=...).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "support/cluster.h"
#include "support/media_fixtures.h"

namespace switchyard::testing {
namespace {

TEST(DaemonEnvTest, SanitizerLogPathNamesTheTestAndTheDaemon) {
  TempDir dir;
  const char* saved = std::getenv("ASAN_OPTIONS");
  const std::string saved_value = saved ? saved : "";
  ASSERT_EQ(::setenv("ASAN_OPTIONS", "log_path=/logs/asan:halt_on_error=1", 1), 0);
  {
    Daemon env("orch-1", dir.path() / "env.log");
    ASSERT_TRUE(env.Start("/usr/bin/env", {}).ok());
    // env exits by itself once it has printed; a SIGTERM before that would lose the output.
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (env.Alive() && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ASSERT_FALSE(env.Alive()) << "/usr/bin/env did not exit within 10 s";
  }
  if (saved) {
    ::setenv("ASAN_OPTIONS", saved_value.c_str(), 1);
  } else {
    ::unsetenv("ASAN_OPTIONS");
  }
  std::ifstream in(dir.path() / "env.log");
  std::stringstream out;
  out << in.rdbuf();
  EXPECT_NE(out.str().find("ASAN_OPTIONS=log_path=/logs/asan.DaemonEnvTest."
                           "SanitizerLogPathNamesTheTestAndTheDaemon.orch-1:halt_on_error=1"),
            std::string::npos)
      << out.str();
  // Everything else passes unchanged.
  EXPECT_NE(out.str().find("PATH="), std::string::npos) << out.str();
}

}  // namespace
}  // namespace switchyard::testing

#include "common/daemon.h"

#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/barrier.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include "support/media_fixtures.h"

namespace switchyard {
namespace {

// After KeepFreedMemoryForReuse, a 20 MiB block comes from the heap (not a private mapping) and,
// once freed, stays there for the next job instead of going back to the kernel. With glibc's
// defaults the first such block is mmapped and unmapped on free.
TEST(KeepFreedMemoryForReuseTest, FreedBlocksStayInTheProcess) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers replace malloc";
#else
  KeepFreedMemoryForReuse();
  constexpr size_t kBlock = 20 << 20;
  const struct mallinfo2 start = mallinfo2();
  void* block = std::malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  asm volatile("" : : "r"(block) : "memory");  // the compiler may not elide the block
  const struct mallinfo2 in_use = mallinfo2();
  EXPECT_LT(in_use.hblkhd - start.hblkhd, kBlock) << "the block was mmapped";
  std::free(block);
  const struct mallinfo2 freed = mallinfo2();
  EXPECT_GE(freed.fordblks - in_use.fordblks, kBlock) << "the freed block went back to the kernel";
#endif
}

TEST(KeepFreedMemoryForReuseTest, ArenaCapFollowsTheCores) {
  EXPECT_EQ(MallocArenaCap(0), 2);  // hardware_concurrency() unknown
  EXPECT_EQ(MallocArenaCap(1), 2);
  EXPECT_EQ(MallocArenaCap(2), 2);
  EXPECT_EQ(MallocArenaCap(6), 6);
  EXPECT_EQ(MallocArenaCap(64), 8);
}

// The heaps (arenas) glibc's malloc_info lists.
int MallocArenas() {
  char* text = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&text, &size);
  if (out == nullptr) return -1;
  malloc_info(0, out);
  std::fclose(out);
  int heaps = 0;
  for (const char* p = text; (p = std::strstr(p, "<heap nr=")) != nullptr; ++p) ++heaps;
  std::free(text);
  return heaps;
}

// 16 threads allocating at the same time share at most MallocArenaCap(cores) arenas (glibc's
// default would give them up to 8 per core).
TEST(KeepFreedMemoryForReuseTest, ThreadsShareACappedNumberOfArenas) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "the sanitizers replace malloc";
#else
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr) GTEST_SKIP() << "MALLOC_ARENA_MAX is set";
  KeepFreedMemoryForReuse();
  const int before = MallocArenas();
  ASSERT_GE(before, 1);
  constexpr int kThreads = 16;
  absl::Barrier* allocated = new absl::Barrier(kThreads);  // deleted by the last to pass
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([allocated] {
      void* block = std::malloc(64 << 10);
      std::memset(block, 1, 64 << 10);
      if (allocated->Block()) delete allocated;  // all hold their blocks at once
      std::free(block);
    });
  }
  for (auto& t : threads) t.join();
  const int cap = MallocArenaCap(std::thread::hardware_concurrency());
  EXPECT_LE(MallocArenas(), std::max(before, cap));
#endif
}

// The fields DaemonFlags::ApplyTo overrides, as both daemons' configs have them.
struct FakeConfig {
  std::string listen = "0.0.0.0:1";
  std::string http_listen = "0.0.0.0:2";
  std::string log_level = "info";
  std::string log_format = "text";
};

// Parses `args` (after the program name) with the daemon flags added.
bool Parse(DaemonFlags* flags, std::vector<std::string> args, bool config_required = false) {
  CLI::App app{"test"};
  flags->AddTo(app, "the HTTP port", config_required);
  args.insert(args.begin(), "daemon");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError&) {
    return false;
  }
  return true;
}

TEST(DaemonFlagsTest, OverrideOnlyWhatIsGiven) {
  DaemonFlags flags;
  ASSERT_TRUE(Parse(&flags, {"-c", "x.json", "--log-level", "debug"}));
  EXPECT_EQ(flags.config_path, "x.json");
  EXPECT_EQ(flags.grace(), std::chrono::milliseconds(10000));
  FakeConfig config;
  flags.ApplyTo(&config);
  EXPECT_EQ(config.listen, "0.0.0.0:1");
  EXPECT_EQ(config.http_listen, "0.0.0.0:2");
  EXPECT_EQ(config.log_level, "debug");
  EXPECT_EQ(config.log_format, "text");
}

TEST(DaemonFlagsTest, EveryOverrideAndAnEmptyHttpListenDisablesIt) {
  DaemonFlags flags;
  ASSERT_TRUE(Parse(
      &flags, {"--config", "y.json", "--listen", "h:3", "--http-listen", "", "--log-format", "json",
               "--port-file", "p", "--http-port-file", "hp", "--shutdown-grace-ms", "250"}));
  FakeConfig config;
  flags.ApplyTo(&config);
  EXPECT_EQ(config.listen, "h:3");
  EXPECT_EQ(config.http_listen, "");
  EXPECT_EQ(config.log_format, "json");
  EXPECT_EQ(flags.port_file, "p");
  EXPECT_EQ(flags.http_port_file, "hp");
  EXPECT_EQ(flags.grace(), std::chrono::milliseconds(250));
}

TEST(DaemonFlagsTest, ConfigRequiredAndGraceNonNegative) {
  DaemonFlags a;
  EXPECT_TRUE(Parse(&a, {}));
  DaemonFlags b;
  EXPECT_FALSE(Parse(&b, {}, /*config_required=*/true));
  DaemonFlags c;
  EXPECT_FALSE(Parse(&c, {"-c", "x", "--shutdown-grace-ms", "-1"}));
}

TEST(WritePortFilesTest, WritesEachNamedFileAndSkipsEmptyPaths) {
  testing::TempDir dir;
  const std::string a = (dir.path() / "a").string(), b = (dir.path() / "b").string();
  ASSERT_TRUE(WritePortFiles({{a, 1}, {"", 2}, {b, 3}}).ok());
  EXPECT_EQ(testing::ReadFile(a), "1\n");
  EXPECT_EQ(testing::ReadFile(b), "3\n");
  EXPECT_FALSE(WritePortFiles({{(dir.path() / "no" / "c").string(), 4}}).ok());
}

}  // namespace
}  // namespace switchyard

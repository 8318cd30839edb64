#include "common/daemon.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>

#include <gtest/gtest.h>

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
  EXPECT_GE(freed.fordblks - in_use.fordblks, kBlock)
      << "the freed block went back to the kernel";
#endif
}

}  // namespace
}  // namespace switchyard

// Orderings that ThreadSanitizer cannot see because they happen inside uninstrumented libraries:
// Debian's gRPC core runs a reactor's callbacks on its own threads, after the thread that created
// the reactor handed it over, through completion queues TSan does not see. HandOff(p) on one
// thread and TakeOver(p) on another tell TSan that everything before the first happens before
// everything after the second. No-ops unless built with -fsanitize=thread (docs/testing.md).
#pragma once

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#endif

namespace switchyard::tsan {

inline void HandOff([[maybe_unused]] const void* object) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void*>(object));
#endif
}

inline void TakeOver([[maybe_unused]] const void* object) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void*>(object));
#endif
}

}  // namespace switchyard::tsan

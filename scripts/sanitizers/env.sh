# Sourced by scripts/test --sanitize=KIND (and by hand: `. scripts/sanitizers/env.sh address DIR`):
# sets the sanitizer runtime options for everything started from this shell (the build's test
# discovery, CTest, the test binaries and the daemons they start). Every process writes its
# reports to DIR/<kind>.<pid> (log_path), so reports from daemons started by integration tests are
# not lost in their logs; those daemons' files are DIR/<kind>.<Suite.Test>.<daemon>.<pid>, naming
# the test that started them (tests/support/cluster.cc). scripts/test fails the run if any such
# file has a report.
# Usage: . scripts/sanitizers/env.sh address|thread LOG_DIR
_sy_kind="$1"
_sy_logs="$2"
_sy_supp="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$_sy_logs"
case "$_sy_kind" in
  address)
    # halt_on_error: the first memory error ends the process (the test fails there).
    # detect_odr_violation=0: Debian's protobuf and gRPC shared libraries are uninstrumented;
    # ODR checks only see our instrumented globals and add nothing but noise at -O1.
    export ASAN_OPTIONS="log_path=$_sy_logs/asan:halt_on_error=1:detect_leaks=1:detect_odr_violation=0:strict_init_order=1:check_initialization_order=1"
    export LSAN_OPTIONS="suppressions=$_sy_supp/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="log_path=$_sy_logs/ubsan:print_stacktrace=1:halt_on_error=1:suppressions=$_sy_supp/ubsan.supp"
    ;;
  thread)
    # halt_on_error=0: a daemon keeps serving after a report (the report is in its log file and
    # fails the run); the process exits with 66 at the end if it reported anything.
    # second_deadlock_stack: both stacks of a lock-order inversion.
    # ignore_noninstrumented_modules=1: the memory accesses that Debian's uninstrumented libraries
    # (FFmpeg, gRPC, protobuf, abseil, libtorch) make through intercepted calls (memcpy, free, ...)
    # are not checked. TSan sees none of their other accesses, nor the atomics that order them
    # (FFmpeg's buffer refcounts, gRPC's completion queues, absl::Mutex), so checking only those
    # calls gives reports about orderings it cannot see. Their pthread locks still count, and every
    # access our instrumented code makes is checked (docs/testing.md).
    export TSAN_OPTIONS="log_path=$_sy_logs/tsan:halt_on_error=0:second_deadlock_stack=1:ignore_noninstrumented_modules=1:suppressions=$_sy_supp/tsan.supp:print_suppressions=0"
    ;;
  *)
    echo "sanitizers/env.sh: unknown sanitizer '$_sy_kind' (address or thread)" >&2
    return 2
    ;;
esac
unset _sy_kind _sy_logs _sy_supp

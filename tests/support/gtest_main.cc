// GoogleTest's main for every test binary, with one addition for CTest (tests/CMakeLists.txt runs
// one process per test suite): --all-skipped-exit-code=N makes a run in which no test passed or
// failed (every test skipped, or none matched the filter) exit with N, which CTest reports as
// skipped instead of passed.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <charconv>
#include <cstdio>
#include <optional>
#include <string_view>

int main(int argc, char** argv) {
  testing::InitGoogleMock(&argc, argv);
  constexpr std::string_view kFlag = "--all-skipped-exit-code=";
  std::optional<int> all_skipped_exit;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    int code = 0;
    const std::string_view value =
        arg.starts_with(kFlag) ? arg.substr(kFlag.size()) : std::string_view();
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), code);
    if (!arg.starts_with(kFlag) || ec != std::errc() || end != value.data() + value.size() ||
        code < 0 || code > 255) {
      std::fprintf(stderr,
                   "%s: unknown argument '%s' (GoogleTest's --gtest_* flags and "
                   "--all-skipped-exit-code=0..255 are taken)\n",
                   argv[0], argv[i]);
      return 2;
    }
    all_skipped_exit = code;
  }
  const int status = RUN_ALL_TESTS();
  const testing::UnitTest& unit = *testing::UnitTest::GetInstance();
  if (status == 0 && all_skipped_exit && unit.successful_test_count() == 0 &&
      unit.failed_test_count() == 0) {
    return *all_skipped_exit;
  }
  return status;
}

# Run as a test binary's POST_BUILD step (tests/CMakeLists.txt, switchyard_test): lists the
# binary's GoogleTest suites and writes a CTest file with one test per suite, each running that
# suite's tests in one process (--gtest_filter=Suite.*). Per test would start the binary once for
# each test, and a binary that links libtorch takes about 0.8 s to start: 600 of the 1,300 tests'
# 1,600 s.
#
# Inputs (-D): TEST_EXECUTABLE, CTEST_FILE, WORKING_DIR, LABELS (a ;-list), SKIP_CODE.
foreach(var IN ITEMS TEST_EXECUTABLE CTEST_FILE WORKING_DIR SKIP_CODE)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "gtest_suites.cmake: ${var} is not set")
  endif()
endforeach()

execute_process(COMMAND "${TEST_EXECUTABLE}" --gtest_list_tests
                WORKING_DIRECTORY "${WORKING_DIR}"
                OUTPUT_VARIABLE listing ERROR_VARIABLE errors RESULT_VARIABLE status
                TIMEOUT 60)
if(NOT status EQUAL 0)
  file(REMOVE "${CTEST_FILE}")
  message(FATAL_ERROR "gtest_suites.cmake: ${TEST_EXECUTABLE} --gtest_list_tests failed "
                      "(${status}):\n${listing}${errors}")
endif()

# A suite's line has no indent: "Suite.", "Prefix/Suite." or "Suite/0.  # TypeParam = ...".
string(REPLACE ";" "," listing "${listing}")
string(REPLACE "\n" ";" lines "${listing}")
set(content "# Written by cmake/gtest_suites.cmake from ${TEST_EXECUTABLE} --gtest_list_tests\n")
set(count 0)
foreach(line IN LISTS lines)
  if(NOT line MATCHES "^([A-Za-z0-9_/]+)\\.( |$)")
    continue()
  endif()
  set(name "${CMAKE_MATCH_1}.*")
  string(APPEND content
    "add_test([==[${name}]==] [==[${TEST_EXECUTABLE}]==] [==[--gtest_filter=${name}]==] "
    "--all-skipped-exit-code=${SKIP_CODE})\n"
    "set_tests_properties([==[${name}]==] PROPERTIES WORKING_DIRECTORY [==[${WORKING_DIR}]==] "
    "LABELS [==[${LABELS}]==] SKIP_RETURN_CODE ${SKIP_CODE})\n")
  math(EXPR count "${count} + 1")
endforeach()
if(count EQUAL 0)
  message(FATAL_ERROR "gtest_suites.cmake: ${TEST_EXECUTABLE} lists no test suite")
endif()
file(WRITE "${CTEST_FILE}" "${content}")

# SWITCHYARD_FUZZ=ON builds the libFuzzer targets of fuzz/ (fuzz_<name> in bin/), as scripts/fuzz
# does in build-fuzz/. libFuzzer comes with clang: configure with CXX=clang++. Every target of the
# project is compiled with coverage instrumentation for the fuzzer (-fsanitize=fuzzer-no-link)
# and with AddressSanitizer and UndefinedBehaviorSanitizer (UB is fatal, so it is a finding); the
# fuzz binaries add libFuzzer's main (-fsanitize=fuzzer). Off by default: the normal build only
# compiles the targets into the seed-replay tests (fuzz/CMakeLists.txt).
option(SWITCHYARD_FUZZ "Build the libFuzzer targets in fuzz/ (clang only; see scripts/fuzz)" OFF)
if(SWITCHYARD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "SWITCHYARD_FUZZ=ON needs clang (libFuzzer is part of it): configure with "
                        "CXX=clang++ (scripts/fuzz does)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer -g)
  add_link_options(-fsanitize=address,undefined)
endif()

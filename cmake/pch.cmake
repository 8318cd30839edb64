# Precompiled headers: most of a clean build's time is GCC parsing the same large headers again in
# every file. Two headers are precompiled once each and force-included per source file, only into
# the files that include what they hold (directly or through our own headers); a file gets at most
# one (GCC uses only the first -include'd .gch):
#  - switchyard_torch_pch: libtorch's <torch/script.h> (GCC 12: 16 s of a 29 s test file), for the
#    ~80 files that include libtorch. A file that does not would only pay for loading the ~450 MB
#    .gch (about 4 s), so it does not get it.
#  - switchyard_test_pch: GoogleTest/GoogleMock, gRPC, our generated gateway/node protocol headers,
#    abseil, nlohmann/json and spdlog, at the tests' -O1, for the test files (tests/) that include
#    GoogleTest and not libtorch, in targets that link switchyard_common (the header is built
#    with its usage requirements, e.g. SPDLOG_COMPILED_LIB): about 4 s of each such file's 10-14 s.
# Each file still includes what it uses, so the build is the same with SWITCHYARD_PCH=OFF.
# GCC checks that a precompiled header suits each compile (the same predefined macros: the top-level
# CMakeLists.txt gives every file the same -pthread, _FILE_OFFSET_BITS and _GLIBCXX_USE_CXX11_ABI)
# and otherwise reads the header itself, with a -Winvalid-pch warning (kept a warning), only slower.
#
# Not for src/: GCC 12 no longer treats inlined libstdc++ code as system-header code when it came
# from a precompiled header of gRPC/protobuf, and reports its known false -Warray-bounds /
# -Wstringop-overflow / -Wstringop-overread on std::string copies (GCC PR 105651): tried,
# src/common/metering.cc (protobuf's Map<std::string, ...>::operator[]) and others, which build
# clean without it. The test files that get switchyard_test_pch are built without those three
# warnings (test code; it saves about a third of their time); the libraries and daemons keep them.
#
# CMake's target_precompile_headers(REUSE_FROM) gives a whole target one header; here it is set per
# source file instead.

# The targets defined in `dir` and the folders below it.
function(_switchyard_targets_in dir out)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _switchyard_targets_in("${sub}" more)
    list(APPEND targets ${more})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

# Whether `libs` (a target's link libraries) bring the headers of `wanted` (a list of library
# names or targets): one of them, or one of our targets whose public (interface) link libraries
# do. Link-only dependencies bring no headers.
function(_switchyard_brings libs wanted out)
  foreach(lib IN LISTS libs)
    if(lib MATCHES "^\\$<" OR lib MATCHES "^::@")
      continue()  # generator expressions: $<LINK_ONLY:...> and the like; no headers from them
    endif()
    if(lib IN_LIST wanted)
      set(${out} TRUE PARENT_SCOPE)
      return()
    endif()
    if(TARGET "${lib}")
      get_target_property(imported "${lib}" IMPORTED)
      if(NOT imported)
        get_target_property(interface "${lib}" INTERFACE_LINK_LIBRARIES)
        if(interface)
          _switchyard_brings("${interface}" "${wanted}" found)
          if(found)
            set(${out} TRUE PARENT_SCOPE)
            return()
          endif()
        endif()
      endif()
    endif()
  endforeach()
  set(${out} FALSE PARENT_SCOPE)
endfunction()

# Whether `file` includes a header whose include name matches `pattern`, itself or through the
# project headers it includes (found beside it, under src/, tests/ or the top folder). `tag` names
# the pattern; results are kept per file and tag for the run.
function(_switchyard_includes file tag pattern out)
  string(MD5 key "${tag}|${file}")
  get_property(known GLOBAL PROPERTY "_switchyard_inc_${key}" SET)
  if(known)
    get_property(result GLOBAL PROPERTY "_switchyard_inc_${key}")
    set(${out} ${result} PARENT_SCOPE)
    return()
  endif()
  # FALSE while this file is being read: an include cycle ends here.
  set_property(GLOBAL PROPERTY "_switchyard_inc_${key}" FALSE)
  set(result FALSE)
  if(EXISTS "${file}")
    file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    get_filename_component(here "${file}" DIRECTORY)
    foreach(line IN LISTS lines)
      if(NOT line MATCHES "include[ \t]*[<\"]([^>\"]+)[>\"]")
        continue()
      endif()
      set(name "${CMAKE_MATCH_1}")
      if(name MATCHES "${pattern}")
        set(result TRUE)
        break()
      endif()
      foreach(dir IN ITEMS "${here}" "${CMAKE_SOURCE_DIR}/src" "${CMAKE_SOURCE_DIR}/tests"
                           "${CMAKE_SOURCE_DIR}")
        if(EXISTS "${dir}/${name}" AND NOT IS_DIRECTORY "${dir}/${name}")
          _switchyard_includes("${dir}/${name}" "${tag}" "${pattern}" found)
          if(found)
            set(result TRUE)
          endif()
          break()
        endif()
      endforeach()
      if(result)
        break()
      endif()
    endforeach()
  endif()
  set_property(GLOBAL PROPERTY "_switchyard_inc_${key}" ${result})
  set(${out} ${result} PARENT_SCOPE)
endfunction()

# Force-includes `pch_target`'s precompiled header into one source file of `target`.
function(_switchyard_use_pch target source pch_target)
  set(header "${CMAKE_BINARY_DIR}/CMakeFiles/${pch_target}.dir/cmake_pch.hxx")
  set_property(SOURCE "${source}" TARGET_DIRECTORY ${target} APPEND PROPERTY
               COMPILE_OPTIONS -Winvalid-pch -include "${header}")
  set_property(SOURCE "${source}" TARGET_DIRECTORY ${target} APPEND PROPERTY
               OBJECT_DEPENDS "${header}.gch")
endfunction()

# What the tests' header holds besides GoogleTest.
set(_SWITCHYARD_COMMON_PCH_HEADERS
    <grpcpp/grpcpp.h> <google/protobuf/message.h> <nlohmann/json.hpp> <spdlog/spdlog.h>
    <absl/status/statusor.h> <absl/strings/str_cat.h> <absl/synchronization/mutex.h>
    <absl/time/time.h> <switchyard/v1/gateway.grpc.pb.h> <switchyard/node/v1/node.grpc.pb.h>)

# Call once, after every target is defined (the end of the top-level CMakeLists.txt).
function(switchyard_precompile_headers)
  file(GENERATE OUTPUT "${CMAKE_BINARY_DIR}/pch/pch.cc"
       CONTENT "// Builds a precompiled header (cmake/pch.cmake).\n")

  add_library(switchyard_torch_pch OBJECT "${CMAKE_BINARY_DIR}/pch/pch.cc")
  target_link_libraries(switchyard_torch_pch PRIVATE ${TORCH_LIBRARIES})
  target_compile_options(switchyard_torch_pch PRIVATE ${TORCH_CXX_FLAGS})
  switchyard_warnings(switchyard_torch_pch)
  target_precompile_headers(switchyard_torch_pch PRIVATE <torch/script.h>)

  # switchyard_common's usage requirements, without linking it (a target that links the header's
  # object library would wait for it).
  get_target_property(common_libs switchyard_common INTERFACE_LINK_LIBRARIES)
  get_target_property(common_includes switchyard_common INTERFACE_INCLUDE_DIRECTORIES)
  get_target_property(common_definitions switchyard_common INTERFACE_COMPILE_DEFINITIONS)
  add_library(switchyard_common_usage INTERFACE)
  foreach(var IN ITEMS common_libs common_includes common_definitions)
    if(NOT ${var})
      set(${var} "")
    endif()
  endforeach()
  # Imported targets found in another folder (pkg-config's there) are not visible here; none of
  # them brings a header the precompiled ones include.
  set(visible_libs "")
  foreach(lib IN LISTS common_libs)
    if(TARGET "${lib}" OR NOT lib MATCHES "::")
      list(APPEND visible_libs "${lib}")
    endif()
  endforeach()
  target_link_libraries(switchyard_common_usage INTERFACE ${visible_libs})
  target_include_directories(switchyard_common_usage INTERFACE ${common_includes})
  target_compile_definitions(switchyard_common_usage INTERFACE ${common_definitions})

  if(SWITCHYARD_BUILD_TESTS)
    add_library(switchyard_test_pch OBJECT "${CMAKE_BINARY_DIR}/pch/pch.cc")
    target_link_libraries(switchyard_test_pch PRIVATE switchyard_common_usage GTest::gtest
                          GTest::gmock)
    switchyard_warnings(switchyard_test_pch)
    # The test files' level (tests/CMakeLists.txt: -O1 in Release): GCC keeps the level a header
    # was precompiled at for its inline functions.
    target_compile_options(switchyard_test_pch PRIVATE $<$<CONFIG:Release>:-O1>
                           -Wno-array-bounds -Wno-stringop-overflow -Wno-stringop-overread)
    target_precompile_headers(switchyard_test_pch PRIVATE
      <gtest/gtest.h> <gmock/gmock.h> ${_SWITCHYARD_COMMON_PCH_HEADERS})
  endif()

  _switchyard_targets_in("${CMAKE_SOURCE_DIR}" targets)
  set(counts_torch 0)
  set(counts_test 0)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY)$" OR
       target MATCHES "^switchyard_(torch|test)_pch$")
      continue()
    endif()
    get_target_property(libs ${target} LINK_LIBRARIES)
    if(NOT libs)
      continue()
    endif()
    _switchyard_brings("${libs}" "${TORCH_LIBRARIES}" with_torch)
    get_target_property(target_dir ${target} SOURCE_DIR)
    set(with_tests FALSE)
    if(SWITCHYARD_BUILD_TESTS AND target_dir MATCHES "^${CMAKE_SOURCE_DIR}/tests(/|$)")
      _switchyard_brings("${libs}" "switchyard_common" with_tests)
    endif()
    if(NOT with_torch AND NOT with_tests)
      continue()
    endif()
    get_target_property(sources ${target} SOURCES)
    set(used FALSE)
    foreach(source IN LISTS sources)
      if(source MATCHES "^\\$<" OR NOT source MATCHES "\\.(cc|cpp|cxx)$")
        continue()
      endif()
      cmake_path(ABSOLUTE_PATH source BASE_DIRECTORY "${target_dir}" NORMALIZE OUTPUT_VARIABLE path)
      # A file in two targets of one folder gets its setting once (source properties are per
      # folder, and both targets see the same).
      string(MD5 key "${target_dir}|${path}")
      get_property(done GLOBAL PROPERTY "_switchyard_pch_${key}" SET)
      if(done)
        get_property(pch GLOBAL PROPERTY "_switchyard_pch_${key}")
        if(pch)
          set(used TRUE)
          add_dependencies(${target} ${pch})
        endif()
        continue()
      endif()
      set(pch "")
      if(with_torch)
        _switchyard_includes("${path}" torch "^(torch|ATen|c10)/" includes_torch)
        if(includes_torch)
          set(pch switchyard_torch_pch)
          math(EXPR counts_torch "${counts_torch} + 1")
        endif()
      endif()
      if(NOT pch AND with_tests)
        _switchyard_includes("${path}" gtest "^(gtest|gmock)/" includes_gtest)
        if(includes_gtest)
          set(pch switchyard_test_pch)
          math(EXPR counts_test "${counts_test} + 1")
        endif()
      endif()
      set_property(GLOBAL PROPERTY "_switchyard_pch_${key}" "${pch}")
      if(pch)
        _switchyard_use_pch(${target} "${path}" ${pch})
        if(pch STREQUAL "switchyard_test_pch")
          set_property(SOURCE "${path}" TARGET_DIRECTORY ${target} APPEND PROPERTY
                       COMPILE_OPTIONS -Wno-array-bounds -Wno-stringop-overflow
                                       -Wno-stringop-overread)
        endif()
        add_dependencies(${target} ${pch})
        set(used TRUE)
      endif()
    endforeach()
    if(used)
      target_compile_options(${target} PRIVATE -Wno-error=invalid-pch)
    endif()
  endforeach()
  message(STATUS "Precompiled headers (SWITCHYARD_PCH): <torch/script.h> in ${counts_torch} files, "
                 "the tests' common headers in ${counts_test}")
endfunction()

# Precompiled headers: libtorch's <torch/script.h> is most of the compile time of every file that
# includes it (GCC 12: 16 s of a 29 s test file), and about eighty of our files do, directly or
# through our own headers. It is precompiled once (switchyard_torch_pch) and force-included per
# source file into exactly those files: a file of a torch-linking target that does not include it
# would only pay for loading the ~450 MB .gch (about 4 s). Each file still includes what it uses,
# so the build is the same with SWITCHYARD_PCH=OFF.
# GCC checks that a precompiled header suits each compile (the same predefined macros: the top-level
# CMakeLists.txt gives every file the same -pthread, _FILE_OFFSET_BITS and _GLIBCXX_USE_CXX11_ABI)
# and otherwise reads the header itself, with a -Winvalid-pch warning (kept a warning), only slower.
#
# Not precompiled: the tests' common headers (GoogleTest, gRPC, json, our protocol headers). Tried:
# GCC 12 then no longer treats the inlined libstdc++ code of those files as system-header code and
# reports its known false -Warray-bounds / -Wstringop-overflow on std::string concatenation in
# test files (tests/common/logging_test.cc, tests/integration/livepeer_api_test.cc).
#
# CMake's target_precompile_headers(REUSE_FROM) gives a whole target the header; here it is set per
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

# Whether `file` includes a libtorch header, itself or through the project headers it includes
# (found beside it, under src/, tests/ or the top folder). Results are kept per file for the run.
function(_switchyard_includes_torch file out)
  string(MD5 key "${file}")
  get_property(known GLOBAL PROPERTY "_switchyard_torch_${key}" SET)
  if(known)
    get_property(result GLOBAL PROPERTY "_switchyard_torch_${key}")
    set(${out} ${result} PARENT_SCOPE)
    return()
  endif()
  # FALSE while this file is being read: an include cycle ends here.
  set_property(GLOBAL PROPERTY "_switchyard_torch_${key}" FALSE)
  set(result FALSE)
  if(EXISTS "${file}")
    file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    get_filename_component(here "${file}" DIRECTORY)
    foreach(line IN LISTS lines)
      if(NOT line MATCHES "include[ \t]*[<\"]([^>\"]+)[>\"]")
        continue()
      endif()
      set(name "${CMAKE_MATCH_1}")
      if(name MATCHES "^(torch|ATen|c10)/")
        set(result TRUE)
        break()
      endif()
      foreach(dir IN ITEMS "${here}" "${CMAKE_SOURCE_DIR}/src" "${CMAKE_SOURCE_DIR}/tests"
                           "${CMAKE_SOURCE_DIR}")
        if(EXISTS "${dir}/${name}" AND NOT IS_DIRECTORY "${dir}/${name}")
          _switchyard_includes_torch("${dir}/${name}" found)
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
  set_property(GLOBAL PROPERTY "_switchyard_torch_${key}" ${result})
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

# Call once, after every target is defined (the end of the top-level CMakeLists.txt).
function(switchyard_precompile_headers)
  file(GENERATE OUTPUT "${CMAKE_BINARY_DIR}/pch/pch.cc"
       CONTENT "// Builds a precompiled header (cmake/pch.cmake).\n")

  add_library(switchyard_torch_pch OBJECT "${CMAKE_BINARY_DIR}/pch/pch.cc")
  target_link_libraries(switchyard_torch_pch PRIVATE ${TORCH_LIBRARIES})
  target_compile_options(switchyard_torch_pch PRIVATE ${TORCH_CXX_FLAGS})
  switchyard_warnings(switchyard_torch_pch)
  target_precompile_headers(switchyard_torch_pch PRIVATE <torch/script.h>)

  _switchyard_targets_in("${CMAKE_SOURCE_DIR}" targets)
  set(torch_files 0)
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY)$" OR
       target STREQUAL "switchyard_torch_pch")
      continue()
    endif()
    get_target_property(libs ${target} LINK_LIBRARIES)
    if(NOT libs)
      continue()
    endif()
    _switchyard_brings("${libs}" "${TORCH_LIBRARIES}" with_torch)
    if(NOT with_torch)
      continue()
    endif()
    get_target_property(target_dir ${target} SOURCE_DIR)
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
      _switchyard_includes_torch("${path}" includes_torch)
      if(includes_torch)
        set(pch switchyard_torch_pch)
        math(EXPR torch_files "${torch_files} + 1")
      endif()
      set_property(GLOBAL PROPERTY "_switchyard_pch_${key}" "${pch}")
      if(pch)
        _switchyard_use_pch(${target} "${path}" ${pch})
        add_dependencies(${target} ${pch})
        set(used TRUE)
      endif()
    endforeach()
    if(used)
      target_compile_options(${target} PRIVATE -Wno-error=invalid-pch)
    endif()
  endforeach()
  message(STATUS "Precompiled <torch/script.h> (SWITCHYARD_PCH) in the ${torch_files} files that "
                 "include it")
endfunction()

# libtorch's <torch/script.h> is most of the compile time of every file that includes it (GCC 12:
# 16 s of a 29 s test file), and about a hundred of our files do. It is precompiled once, in
# switchyard_torch_pch, and every target that links libtorch reuses that header (GCC's .gch is
# ~450 MB, so one copy, not one per target). The header is force-included in those targets' files;
# each file still includes what it uses, so the build is the same with SWITCHYARD_PCH=OFF.
# GCC checks that a precompiled header suits each compile and otherwise reads the header itself,
# with a warning (-Winvalid-pch; not an error, so a target with a flag that changes predefined
# macros, e.g. -D_FILE_OFFSET_BITS=64 from a pkg-config file, still builds, only slower).

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

# Whether `libs` (a target's link libraries) bring libtorch's headers: torch itself, or one of our
# targets whose public (interface) link libraries do. Link-only dependencies bring no headers.
function(_switchyard_brings_torch libs out)
  foreach(lib IN LISTS libs)
    if(lib MATCHES "^\\$<" OR lib MATCHES "^::@")
      continue()  # generator expressions: $<LINK_ONLY:...> and the like; no headers from them
    endif()
    if(lib IN_LIST TORCH_LIBRARIES)
      set(${out} TRUE PARENT_SCOPE)
      return()
    endif()
    if(TARGET "${lib}")
      get_target_property(imported "${lib}" IMPORTED)
      if(NOT imported)
        get_target_property(interface "${lib}" INTERFACE_LINK_LIBRARIES)
        if(interface)
          _switchyard_brings_torch("${interface}" found)
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

# Call once, after every target is defined (the end of the top-level CMakeLists.txt).
function(switchyard_reuse_torch_pch)
  file(GENERATE OUTPUT "${CMAKE_BINARY_DIR}/torch_pch/torch_pch.cc"
       CONTENT "// Builds the precompiled <torch/script.h> (cmake/torch_pch.cmake).\n")
  add_library(switchyard_torch_pch OBJECT "${CMAKE_BINARY_DIR}/torch_pch/torch_pch.cc")
  target_link_libraries(switchyard_torch_pch PRIVATE ${TORCH_LIBRARIES})
  # The flags that change predefined macros must be the users' (GCC refuses a header precompiled
  # with other macros): -pthread (_REENTRANT; most of our targets get it through gRPC, and each
  # user gets it below), and our warning flags (-Wpedantic: __cpp_runtime_arrays).
  target_compile_options(switchyard_torch_pch PRIVATE ${TORCH_CXX_FLAGS} -pthread)
  switchyard_warnings(switchyard_torch_pch)
  target_precompile_headers(switchyard_torch_pch PRIVATE <torch/script.h>)

  _switchyard_targets_in("${CMAKE_SOURCE_DIR}" targets)
  set(users "")
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|OBJECT_LIBRARY)$" OR
       target STREQUAL "switchyard_torch_pch")
      continue()
    endif()
    get_target_property(libs ${target} LINK_LIBRARIES)
    if(NOT libs)
      continue()
    endif()
    _switchyard_brings_torch("${libs}" found)
    if(found)
      target_precompile_headers(${target} REUSE_FROM switchyard_torch_pch)
      target_compile_options(${target} PRIVATE -pthread -Wno-error=invalid-pch)
      list(APPEND users ${target})
    endif()
  endforeach()
  list(LENGTH users count)
  message(STATUS "Precompiled <torch/script.h> reused by ${count} targets (SWITCHYARD_PCH)")
endfunction()

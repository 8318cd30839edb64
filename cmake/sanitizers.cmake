# SWITCHYARD_SANITIZE=address|thread instruments Switchyard's own code (our libraries, daemons,
# tests and the generated protobuf/gRPC code) for the sanitizer runs of `scripts/test --sanitize=...`.
#   address: AddressSanitizer (with LeakSanitizer) and UndefinedBehaviorSanitizer. UB is fatal
#            (-fno-sanitize-recover=undefined): a report fails the test instead of scrolling by.
#   thread:  ThreadSanitizer.
# Third-party libraries (libtorch, gRPC, protobuf, FFmpeg, Boost.Asio headers aside) are Debian's
# uninstrumented builds; scripts/sanitizers/*.supp suppress reports that lie wholly in them.
# Included before add_subdirectory() so every target in this project gets the flags.
set(SWITCHYARD_SANITIZE "" CACHE STRING
    "Sanitizer build: empty (none), 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE SWITCHYARD_SANITIZE PROPERTY STRINGS "" address thread)

if(SWITCHYARD_SANITIZE STREQUAL "")
  return()
elseif(SWITCHYARD_SANITIZE STREQUAL "address")
  set(_switchyard_sanitize_flags -fsanitize=address,undefined -fno-sanitize-recover=undefined)
elseif(SWITCHYARD_SANITIZE STREQUAL "thread")
  set(_switchyard_sanitize_flags -fsanitize=thread)
else()
  message(FATAL_ERROR
          "SWITCHYARD_SANITIZE='${SWITCHYARD_SANITIZE}': expected '', 'address' or 'thread'")
endif()
message(STATUS "Sanitizer build: ${SWITCHYARD_SANITIZE} (${_switchyard_sanitize_flags})")
# -O1 -g come after the build type's -O3 on the command line, so they win: usable stacks, and
# the sanitizers' overhead stays moderate.
add_compile_options(${_switchyard_sanitize_flags} -fno-omit-frame-pointer -O1 -g)
add_link_options(${_switchyard_sanitize_flags})

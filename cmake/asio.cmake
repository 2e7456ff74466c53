# connpool - standalone Asio (optional): the asio::asio target for the Asio adapter's test and
# example.
#
# <connpool/asio.hpp> is an optional adapter, and Asio is never a dependency of the connpool
# target. This file only looks for standalone Asio (Debian 12: apt-get install libasio-dev, which
# installs /usr/include/asio.hpp and no CMake package), for connpool's own tests and examples.
# When it is found, asio::asio is an INTERFACE IMPORTED target: Asio's include directory (as
# SYSTEM), ASIO_STANDALONE, ASIO_NO_DEPRECATED and Threads::Threads. When it is not, there is no
# asio::asio, and whatever needs it is skipped with a STATUS message. Point
# CONNPOOL_ASIO_INCLUDE_DIR at another copy to use that one.
include_guard(GLOBAL)

# Cancellation slots (Asio's per-operation cancellation) arrived in 1.19.
set(_connpool_asio_min_version 1.19.0)

find_path(
  CONNPOOL_ASIO_INCLUDE_DIR
  NAMES asio.hpp
  DOC "Directory holding standalone Asio's asio.hpp (Debian: libasio-dev)")
mark_as_advanced(CONNPOOL_ASIO_INCLUDE_DIR)

if(NOT CONNPOOL_ASIO_INCLUDE_DIR)
  message(STATUS "connpool: standalone Asio not found (apt-get install libasio-dev): the Asio "
                 "adapter's test and example are skipped")
  return()
endif()

# asio/version.hpp: `#define ASIO_VERSION 102201 // 1.22.1`, i.e. major * 100000 + minor * 100
# + patch.
set(_connpool_asio_version "")
if(EXISTS "${CONNPOOL_ASIO_INCLUDE_DIR}/asio/version.hpp")
  file(STRINGS "${CONNPOOL_ASIO_INCLUDE_DIR}/asio/version.hpp" _connpool_asio_version_line
       REGEX "^#define ASIO_VERSION [0-9]+")
  if(_connpool_asio_version_line MATCHES "ASIO_VERSION ([0-9]+)")
    math(EXPR _major "${CMAKE_MATCH_1} / 100000")
    math(EXPR _minor "${CMAKE_MATCH_1} / 100 % 1000")
    math(EXPR _patch "${CMAKE_MATCH_1} % 100")
    set(_connpool_asio_version "${_major}.${_minor}.${_patch}")
  endif()
endif()
if(NOT _connpool_asio_version OR _connpool_asio_version VERSION_LESS _connpool_asio_min_version)
  message(STATUS "connpool: standalone Asio in ${CONNPOOL_ASIO_INCLUDE_DIR} has version "
                 "'${_connpool_asio_version}', older than ${_connpool_asio_min_version} or "
                 "unknown: the Asio adapter's test and example are skipped")
  return()
endif()

if(NOT TARGET asio::asio)
  find_package(Threads REQUIRED) # Asio's io_context and its system executor use threads
  add_library(asio::asio INTERFACE IMPORTED)
  target_include_directories(asio::asio SYSTEM INTERFACE "${CONNPOOL_ASIO_INCLUDE_DIR}")
  # ASIO_STANDALONE: never look for Boost. ASIO_NO_DEPRECATED: our code must not use what Asio
  # plans to remove.
  target_compile_definitions(asio::asio INTERFACE ASIO_STANDALONE ASIO_NO_DEPRECATED)
  target_link_libraries(asio::asio INTERFACE Threads::Threads)

  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # Workaround for Asio 1.22 on clang: Asio enables co_await (asio::awaitable, use_awaitable,
    # co_spawn) on clang only when <experimental/coroutine> exists, which libc++ has and
    # libstdc++ (Debian's standard library for clang++) does not; clang 14 supports C++20
    # coroutines through <coroutine> all the same. Later Asio versions test
    # __cpp_impl_coroutine instead; defining the macro there is harmless.
    target_compile_definitions(asio::asio INTERFACE ASIO_HAS_CO_AWAIT=1)
    # Workaround for clang 14 (llvm/llvm-project#49689), as in connpool's
    # CONNPOOL_CORO_NO_SANITIZE_FUNCTION: with -fsanitize=function (part of
    # -fsanitize=undefined), a coroutine that is a template or inline fails to compile with
    # "Cannot represent a difference across sections", and Asio's coroutines (co_spawn's entry
    # point, the awaitable frames) cannot carry the attribute. Only that one check is dropped, and
    # only in the sanitizer builds.
    if(CMAKE_CXX_FLAGS MATCHES "-fsanitize=[^ ]*(undefined|function)")
      target_compile_options(asio::asio INTERFACE -fno-sanitize=function)
    endif()
  endif()
endif()

message(STATUS "connpool: standalone Asio ${_connpool_asio_version} in "
               "${CONNPOOL_ASIO_INCLUDE_DIR}: building the Asio adapter's test and example")

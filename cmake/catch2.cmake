# connpool - Catch2 discovery and connpool_add_test().
#
# Catch2 3 is preferred where it is installed; Debian 12 ships 2.13 only (apt-get install
# catch2). Both export Catch2::Catch2WithMain and ship the Catch module with
# catch_discover_tests(). Test sources include only tests/support/catch.hpp, a shim that picks
# the right Catch2 header.
include_guard(GLOBAL)

find_package(Catch2 3 QUIET)
if(Catch2_FOUND)
  set(CONNPOOL_CATCH2_V3 ON)
else()
  find_package(Catch2 2.13 REQUIRED)
  set(CONNPOOL_CATCH2_V3 OFF)
endif()
include(Catch)

# connpool_add_test(<name> <source>...)
#
# One Catch2 executable linked to connpool::connpool and Catch2::Catch2WithMain, with
# tests/support on its include path and connpool's warnings. Each TEST_CASE becomes its own
# CTest test named "<name>:<test case name>" and labelled `unit`, so
# `ctest -R '^connpool_tests:'` or `ctest -L unit` select them.
function(connpool_add_test name)
  if(NOT ARGN)
    message(FATAL_ERROR "connpool_add_test(${name}): no source files")
  endif()
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE connpool::connpool Catch2::Catch2WithMain)
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/tests/support")
  if(CONNPOOL_CATCH2_V3)
    target_compile_definitions(${name} PRIVATE CONNPOOL_CATCH2_V3)
  endif()
  connpool_add_warnings(${name})
  # TIMEOUT: generous for TSan (5-15x slower) on 2 cores; a hung waiter still fails, not stalls CI.
  catch_discover_tests(${name} TEST_PREFIX "${name}:" PROPERTIES LABELS unit TIMEOUT 300)
endfunction()

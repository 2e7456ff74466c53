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

# connpool_add_test(<name> [ONE_PROCESS] <source>...)
#
# One Catch2 executable linked to connpool::connpool and Catch2::Catch2WithMain, with
# tests/support on its include path and connpool's warnings. Each TEST_CASE becomes its own
# CTest test named "<name>:<test case name>" and labelled `unit`, so
# `ctest -R '^connpool_tests:'` or `ctest -L unit` select them. With ONE_PROCESS, the whole
# executable is one CTest test named "<name>" instead, its test cases run in one process in
# declaration order: for an executable whose last test case checks what the others did together
# (connpool_stress_test's count of operations).
function(connpool_add_test name)
  cmake_parse_arguments(PARSE_ARGV 1 arg "ONE_PROCESS" "" "")
  set(sources ${arg_UNPARSED_ARGUMENTS})
  if(NOT sources)
    message(FATAL_ERROR "connpool_add_test(${name}): no source files")
  endif()
  add_executable(${name} ${sources})
  target_link_libraries(${name} PRIVATE connpool::connpool Catch2::Catch2WithMain)
  target_include_directories(${name} PRIVATE "${PROJECT_SOURCE_DIR}/tests/support")
  if(CONNPOOL_CATCH2_V3)
    target_compile_definitions(${name} PRIVATE CONNPOOL_CATCH2_V3)
  endif()
  connpool_add_warnings(${name})
  if(arg_ONE_PROCESS)
    # TIMEOUT: all its test cases in a row, under TSan on 2 cores.
    add_test(NAME ${name} COMMAND ${name} --order decl --durations yes)
    set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 900)
    return()
  endif()
  # TIMEOUT: generous for TSan (5-15x slower) on 2 cores; a hung waiter still fails, not stalls CI.
  # --warn NoTests: a test whose name CTest cannot pass back as a filter (a ';' splits it into
  # two tests) matches nothing; without it Catch2 reports that as a pass.
  catch_discover_tests(${name} TEST_PREFIX "${name}:" EXTRA_ARGS --warn NoTests
                       PROPERTIES LABELS unit TIMEOUT 300)
endfunction()

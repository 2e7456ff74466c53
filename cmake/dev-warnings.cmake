# connpool - developer settings for connpool's own targets (tests, benchmarks, examples).
#
# connpool_add_warnings(<target>) turns on -Wall -Wextra -Wpedantic (+ -Werror, and
# -Wthread-safety on clang, which checks the CONNPOOL_GUARDED_BY/REQUIRES annotations) and pins
# standard C++ (CXX_EXTENSIONS OFF). Everything is PRIVATE to <target>: the connpool library
# target itself never carries warnings or flags, so nothing leaks into a consumer's build.
include_guard(GLOBAL)

option(CONNPOOL_WARNINGS_AS_ERRORS "Add -Werror to connpool's own test/bench/example targets" ON)

function(connpool_add_warnings target)
  if(MSVC)
    target_compile_options(${target} PRIVATE /W4 $<$<BOOL:${CONNPOOL_WARNINGS_AS_ERRORS}>:/WX>)
  else()
    target_compile_options(
      ${target}
      PRIVATE -Wall
              -Wextra
              -Wpedantic
              $<$<BOOL:${CONNPOOL_WARNINGS_AS_ERRORS}>:-Werror>
              $<$<CXX_COMPILER_ID:Clang,AppleClang>:-Wthread-safety>)
  endif()
  # -std=c++20 rather than gnu++20 for our own code, so GNU extensions cannot creep in.
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
endfunction()

// connpool - tests: the main() of an integration test binary (tests/integration)
// SPDX-License-Identifier: MIT
#pragma once

// An integration test binary runs its Catch2 test cases only when its server answers. Without
// one it reports itself skipped (exit 77, CTest's SKIP_RETURN_CODE) with the reason, unless
// CONNPOOL_REQUIRE_SERVERS=1 (set by .ci/run), when that is a failure. Include it after
// defining CATCH_CONFIG_RUNNER and including catch.hpp.

#include <cstdio>
#include <cstdlib>
#include <string>

#if __has_include(<catch2/catch_session.hpp>)
#include <catch2/catch_session.hpp>  // Catch2 3: Session is not in the test macros' header
#endif

namespace connpool_test {

/// `why_unreachable()` returns "" when the server answers, else why not.
template <class Check>
int run_if_reachable(const char* binary, Check why_unreachable, int argc, char** argv) {
  const char* require = std::getenv("CONNPOOL_REQUIRE_SERVERS");
  const bool required = require != nullptr && std::string(require) == "1";
  const std::string why = why_unreachable();
  if (!why.empty()) {
    std::fprintf(stderr, "%s: %s: %s\n", binary, required ? "FAILED" : "skipped", why.c_str());
    return required ? 1 : 77;
  }
  return Catch::Session().run(argc, argv);
}

}  // namespace connpool_test

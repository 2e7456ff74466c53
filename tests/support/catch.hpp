// connpool - tests: the Catch2 2/3 shim
// SPDX-License-Identifier: MIT
#pragma once

// Test sources include this header only, never Catch2's own. Catch2 3 splits its API over
// several headers; Catch2 2.13 (Debian 12) has the single <catch2/catch.hpp>. Use only the API
// the two majors share: TEST_CASE, SECTION, REQUIRE/CHECK, REQUIRE_THROWS_AS,
// REQUIRE_THROWS_WITH, TEMPLATE_TEST_CASE, GENERATE, and Approx through connpool_test::Approx.

#if __has_include(<catch2/catch_test_macros.hpp>)
#include <catch2/catch_approx.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>

namespace connpool_test {
using Catch::Approx;
}  // namespace connpool_test
#else
#include <catch2/catch.hpp>

namespace connpool_test {
using Catch::Detail::Approx;
}  // namespace connpool_test
#endif

// connpool - tests: ODR, the test that links both translation units
// SPDX-License-Identifier: MIT

#include <string>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "odr_types.hpp"

TEST_CASE("connpool: two translation units that include the umbrella link and work together",
          "[odr]") {
  // The proof is mostly that this binary links; the checks make sure both halves really ran.
  const odr::Report a = odr::use_pool_in_a();
  const odr::Report b = odr::use_pool_in_b();
  CHECK(a.conn_id == 7);
  CHECK(b.conn_id == 7);
  CHECK(a.acquired == 2);
  CHECK(b.acquired == 1);
  CHECK(a.idle == 2);
  CHECK(b.idle == 1);
  CHECK(a.json.find("\"acquired\":2") != std::string::npos);
  CHECK(b.json.find("\"acquired\":1") != std::string::npos);
}

// connpool - tests: detail::Balancer and detail::IndexSet, picking a host by strategy
// SPDX-License-Identifier: MIT

// The balancer sees hosts only through ok(i) and load(i), so a vector of flags and loads stands
// in for the hosts here. The random strategies are checked for what holds whatever the draw;
// their spread is tested in multi_host_pool_test.cpp.

#include <cstddef>
#include <vector>

#include <connpool/detail/balancer.hpp>

#include "catch.hpp"

using connpool::Balance;
using connpool::detail::Balancer;
using connpool::detail::IndexSet;

namespace {

/// n hosts, each with a flag (may it be picked) and a load.
struct Hosts {
  std::vector<bool> ok;
  std::vector<std::size_t> load;

  [[nodiscard]] std::size_t size() const { return ok.size(); }
  auto ok_fn() const {
    return [this](std::size_t i) { return static_cast<bool>(ok[i]); };
  }
  auto load_fn() const {
    return [this](std::size_t i) { return load[i]; };
  }
  std::size_t pick(const Balancer& b, const IndexSet& skip, std::size_t after = Balancer::none) {
    return b.pick(size(), skip, after, ok_fn(), load_fn());
  }
};

}  // namespace

TEST_CASE("IndexSet: holds indices in a word up to 64 hosts, and beyond",
          "[multi_host][balancer]") {
  for (const std::size_t n : {std::size_t{3}, std::size_t{64}, std::size_t{200}}) {
    IndexSet s(n);
    CHECK_FALSE(s.contains(0));
    CHECK_FALSE(s.contains(n - 1));
    s.insert(0);
    s.insert(n - 1);
    CHECK(s.contains(0));
    CHECK(s.contains(n - 1));
    CHECK_FALSE(s.contains(1));
    IndexSet copy = s;
    CHECK(copy.contains(n - 1));
  }
}

TEST_CASE("Balancer: round_robin goes on after the previous pick, skipping what it must",
          "[multi_host][balancer]") {
  Balancer b(Balance::round_robin);
  Hosts h{{true, true, true, true}, {0, 0, 0, 0}};
  const IndexSet none(4);
  CHECK(h.pick(b, none, 0) == 1);
  CHECK(h.pick(b, none, 3) == 0);  // wraps around
  h.ok[1] = false;
  CHECK(h.pick(b, none, 0) == 2);
  IndexSet skip(4);
  skip.insert(2);
  CHECK(h.pick(b, skip, 0) == 3);
  // A thread's own turns go round in order.
  h.ok[1] = true;
  const std::size_t first = h.pick(b, none);
  for (std::size_t k = 1; k < 8; ++k) {
    CHECK(h.pick(b, none) == (first + k) % 4);
  }
}

TEST_CASE("Balancer: least_in_use picks the smallest load, ties to the first",
          "[multi_host][balancer]") {
  Balancer b(Balance::least_in_use);
  Hosts h{{true, true, true}, {2, 1, 1}};
  const IndexSet none(3);
  CHECK(h.pick(b, none) == 1);
  h.ok[1] = false;
  CHECK(h.pick(b, none) == 2);
  IndexSet skip(3);
  skip.insert(2);
  CHECK(h.pick(b, skip) == 0);
  CHECK(Balancer::least_loaded(h.size(), skip, h.ok_fn(), h.load_fn()) == 0);
}

TEST_CASE("Balancer: every strategy returns none when no host may be picked",
          "[multi_host][balancer]") {
  const Balance balance = GENERATE(Balance::round_robin, Balance::least_in_use, Balance::random,
                                   Balance::power_of_two_choices);
  Balancer b(balance);
  Hosts h{{false, true, false}, {0, 0, 0}};
  IndexSet skip(3);
  skip.insert(1);
  CHECK(h.pick(b, skip) == Balancer::none);
  CHECK(b.pick(0, IndexSet(0), Balancer::none, h.ok_fn(), h.load_fn()) == Balancer::none);
  // With one host left, every strategy finds it.
  for (int k = 0; k < 50; ++k) {
    CHECK(h.pick(b, IndexSet(3)) == 1);
  }
}

TEST_CASE("Balancer: power_of_two_choices prefers the less loaded of two hosts",
          "[multi_host][balancer]") {
  // With two hosts, both are always drawn: the less loaded one wins every time.
  Balancer b(Balance::power_of_two_choices);
  Hosts h{{true, true}, {5, 2}};
  for (int k = 0; k < 50; ++k) {
    CHECK(h.pick(b, IndexSet(2)) == 1);
  }
  h.ok[1] = false;
  for (int k = 0; k < 50; ++k) {
    CHECK(h.pick(b, IndexSet(2)) == 0);
  }
}

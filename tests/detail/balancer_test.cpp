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

TEST_CASE("Balancer: a member set (a route) shares the turns and draws evenly among its hosts",
          "[multi_host][balancer][routing]") {
  // Host 0 is not a member (the primary, for Route::replica); hosts 1 and 3 are.
  Hosts h{{true, true, true, true}, {0, 0, 0, 0}};
  const IndexSet none(4);
  auto member = [](std::size_t i) { return i == 1 || i == 3; };
  for (const Balance balance : {Balance::round_robin, Balance::random,
                                Balance::power_of_two_choices, Balance::least_in_use}) {
    CAPTURE(static_cast<int>(balance));
    Balancer b(balance);
    std::vector<int> picked(4, 0);
    for (int k = 0; k < 400; ++k) {
      const std::size_t i = b.pick(4, none, Balancer::none, h.ok_fn(), h.load_fn(), member);
      REQUIRE(i < 4);
      ++picked[i];
    }
    CHECK(picked[0] == 0);
    CHECK(picked[2] == 0);
    if (balance == Balance::round_robin) {
      // One thread's turns are exact: every other pick.
      CHECK(picked[1] == 200);
      CHECK(picked[3] == 200);
    } else if (balance == Balance::least_in_use) {
      CHECK(picked[1] == 400);  // equal loads: ties go to the first member
    } else {
      // Uniform over two members: 400 draws fall outside 120..280 with probability < 1e-15.
      CHECK(picked[1] > 120);
      CHECK(picked[3] > 120);
    }
  }
  Balancer b(Balance::round_robin);
  // A member that may not be picked passes its turn to the next member, never to another host.
  h.ok[1] = false;
  for (int k = 0; k < 10; ++k) {
    CHECK(b.pick(4, none, Balancer::none, h.ok_fn(), h.load_fn(), member) == 3);
  }
  h.ok[3] = false;
  CHECK(b.pick(4, none, Balancer::none, h.ok_fn(), h.load_fn(), member) == Balancer::none);
  // No member at all.
  auto nobody = [](std::size_t) { return false; };
  h.ok[1] = h.ok[3] = true;
  for (const Balance balance : {Balance::round_robin, Balance::random,
                                Balance::power_of_two_choices, Balance::least_in_use}) {
    CHECK(Balancer(balance).pick(4, none, Balancer::none, h.ok_fn(), h.load_fn(), nobody) ==
          Balancer::none);
  }
}

// connpool - picking a MultiHostPool host by a Balance strategy
// SPDX-License-Identifier: MIT
#pragma once

// Balancer picks a host index by MultiHostOptions::balance from what the caller says of each
// host (may it be picked, how many connections it has out); IndexSet is the set of hosts an
// acquire rules out. Also the per-thread helpers they use (thread stripes, a small random
// generator). No member locks, no clock is read (beyond seeding the random generator) and no
// user code runs; hosts, breakers and the acquire itself are in host_entry.hpp and
// multi_host_pool.hpp.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <connpool/multi_host_options.hpp>

namespace connpool::detail {

/// The size of a cache line, for counters written by many threads.
inline constexpr std::size_t cache_line_size = 64;

/// A small number for this thread, distinct among the first threads that ask (0, 1, 2, ...),
/// to spread per-thread writes over stripes of a counter.
inline std::size_t thread_stripe() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t stripe = next.fetch_add(1, std::memory_order_relaxed);
  return stripe;
}

/// A small pseudo-random generator per thread (splitmix64) for the random balancers.
///
/// Why not <random>: std::mt19937 is 5 KB of state and a std::uniform_int_distribution per
/// call; splitmix64 is one multiply-xorshift chain on 8 bytes, and the balancer needs no more.
inline std::uint64_t thread_random() noexcept {
  thread_local std::uint64_t state = [] {
    const auto t =
        static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    int local = 0;
    return t ^ (reinterpret_cast<std::uintptr_t>(&local) * 0x9E3779B97F4A7C15ULL);
  }();
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30U)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27U)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31U);
}

/// A uniform index below `n` (0 < n < 2^32), by Lemire's multiply-shift (no division).
inline std::size_t random_below(std::size_t n) noexcept {
  return static_cast<std::size_t>(((thread_random() >> 32U) * static_cast<std::uint64_t>(n)) >>
                                  32U);
}

/// A set of host indices, in one word for up to 64 hosts (no allocation on the fast path).
class IndexSet {
 public:
  explicit IndexSet(std::size_t n) {
    if (n > 64) {
      more_.assign(n, false);
    }
  }
  [[nodiscard]] bool contains(std::size_t i) const noexcept {
    return more_.empty() ? ((bits_ >> i) & 1U) != 0 : static_cast<bool>(more_[i]);
  }
  void insert(std::size_t i) {
    if (more_.empty()) {
      bits_ |= std::uint64_t{1} << i;
    } else {
      more_[i] = true;
    }
  }

 private:
  std::uint64_t bits_ = 0;
  std::vector<bool> more_;
};

/// Every host is a member: the set a pick is among when no Route narrows it (see Balancer::pick).
struct AllHosts {
  constexpr bool operator()(std::size_t /*i*/) const noexcept { return true; }
};

/// Picks one of n hosts (0 .. n-1) by a Balance strategy.
///
/// The caller describes the hosts through two callables: ok(i), whether host i may be picked
/// (capacity, circuit), and load(i), its connections out now (re-read at each comparison, so
/// a host's load may change during a pick). ok(i) is never called for a host in `skip`. An
/// optional third, member(i), narrows the pick to a set of hosts (a Route's): turns and random
/// draws are then taken among the members, so that each member gets an even share.
///
/// Thread safety: all members may be called concurrently; the only shared writes are
/// round_robin's turn counters (see next_turn()). Complexity: O(1) for round_robin, random and
/// power_of_two_choices when the first host looked at may be picked, else O(n); O(n) for
/// least_in_use and least_loaded(). Allocates nothing.
class Balancer {
 public:
  /// No host: every one is skipped or not ok.
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  explicit Balancer(Balance balance) noexcept : balance_(balance) {}

  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  /// The index of the host to try, or `none`.
  ///
  /// `after` is `none` for the first pick of an acquire; for a later one, the host it picked
  /// before: round_robin then goes on from the host after it instead of taking a new turn, so a
  /// failed host hands its turn to the next one and the order stays exact.
  ///
  /// Why turns among the members: with the primary listed first, a replica turn that fell on it
  /// and passed to the next host would give the first replica two turns in three.
  template <class Ok, class Load, class Member = AllHosts>
  [[nodiscard]] std::size_t pick(std::size_t n,
                                 const IndexSet& skip,
                                 std::size_t after,
                                 Ok&& ok,
                                 Load&& load,
                                 Member member = {}) const {
    constexpr bool all = std::is_same_v<Member, AllHosts>;
    auto eligible = [&](std::size_t i) { return member(i) && !skip.contains(i) && ok(i); };
    // The members: how many, and the k-th (k < m) in index order.
    std::size_t m = n;
    if constexpr (!all) {
      m = 0;
      for (std::size_t i = 0; i < n; ++i) {
        m += member(i) ? 1 : 0;
      }
    }
    auto nth = [&](std::size_t k) {
      if constexpr (all) {
        return k;
      } else {
        for (std::size_t i = 0; i < n; ++i) {
          if (member(i) && k-- == 0) {
            return i;
          }
        }
        return std::size_t{0};  // not reached: k < m
      }
    };
    auto scan_from = [&](std::size_t start) {
      for (std::size_t k = 0; k < n; ++k) {
        const std::size_t i = start + k < n ? start + k : start + k - n;
        if (eligible(i)) {
          return i;
        }
      }
      return none;
    };
    if (m == 0) {
      return none;
    }
    switch (balance_) {
      case Balance::round_robin:
        return scan_from(after != none ? (after + 1) % n : nth(next_turn() % m));
      case Balance::random:
        return scan_from(nth(random_below(m)));
      case Balance::least_in_use:
        return least_loaded(
            n, skip, [&](std::size_t i) { return member(i) && ok(i); }, load);
      case Balance::power_of_two_choices: {
        if (m < 2) {
          return scan_from(nth(0));
        }
        const std::size_t ka = random_below(m);
        std::size_t kb = random_below(m - 1);
        kb += kb >= ka ? 1 : 0;
        const std::size_t a = nth(ka);
        const std::size_t b = nth(kb);
        const bool ea = eligible(a);
        const bool eb = eligible(b);
        if (ea && eb) {
          return load(b) < load(a) ? b : a;
        }
        if (ea || eb) {
          return ea ? a : b;
        }
        return scan_from(a);
      }
    }
    return none;
  }

  /// The host with the smallest load(i) among those not in `skip` and ok, ties to the lowest
  /// index; `none` if there is none.
  template <class Ok, class Load>
  [[nodiscard]] static std::size_t least_loaded(std::size_t n,
                                                const IndexSet& skip,
                                                Ok&& ok,
                                                Load&& load) {
    std::size_t best = none;
    for (std::size_t i = 0; i < n; ++i) {
      if (!skip.contains(i) && ok(i) && (best == none || load(i) < load(best))) {
        best = i;
      }
    }
    return best;
  }

 private:
  /// round_robin's next turn: this thread's stripe of the turn counter.
  ///
  /// Why stripes: one counter written by every acquire of every thread bounces its cache line
  /// between cores, which cost more than the rest of the acquire together (bench/
  /// multi_host_bench.cpp, BM_Threads_MultiHost). Each thread takes turns on one of
  /// turn_stripes counters (threads share a stripe only beyond that many), so one thread's
  /// order is exact and the spread over many acquires is even.
  /// Why a load and a store rather than fetch_add: two threads that share a stripe and race here
  /// may take the same turn (a lost update), which leaves the spread even; a locked
  /// read-modify-write would cost about 6 ns more per acquire.
  std::size_t next_turn() const noexcept {
    std::atomic<std::size_t>& turn = turns_[thread_stripe() % turn_stripes].value;
    const std::size_t t = turn.load(std::memory_order_relaxed);
    turn.store(t + 1, std::memory_order_relaxed);
    return t;
  }

  static constexpr std::size_t turn_stripes = 8;
  struct alignas(cache_line_size) Turn {
    std::atomic<std::size_t> value{0};
  };

  const Balance balance_;
  mutable std::array<Turn, turn_stripes> turns_{};  // round_robin's turns, per thread stripe
};

}  // namespace connpool::detail

// connpool - an adapter over soci::connection_pool, a baseline for bench/workloads_bench.cpp
// SPDX-License-Identifier: MIT
#pragma once

// SociPool gives SOCI's pool (Debian: libsoci-dev, library soci_core) the acquire()/lease
// shape the benchmarks use. soci::connection_pool holds `size` soci::session objects in a
// vector of (free, session*) pairs under one pthread mutex and condition variable; lease()
// scans that vector from the start for a free entry. The sessions are never opened: leasing
// needs no database, so only the pool's own cost is measured. Only built when SOCI is found
// (CONNPOOL_BENCH_HAVE_SOCI).

#include <cstddef>
#include <utility>

#include <soci/connection-pool.h>

namespace connpool_bench {

/// soci::connection_pool behind an RAII lease.
///
/// Thread safety: acquire() may be called concurrently; a Lease is used by one thread at a time.
/// Lifetime: every Lease must be destroyed before the pool.
class SociPool {
 public:
  /// A leased session index, given back by the destructor.
  class Lease {
   public:
    Lease(soci::connection_pool* pool, std::size_t pos) noexcept : pool_(pool), pos_(pos) {}
    Lease(Lease&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)), pos_(other.pos_) {}
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease() {
      if (pool_ != nullptr) {
        pool_->give_back(pos_);
      }
    }

    soci::session* get() noexcept { return &pool_->at(pos_); }

   private:
    soci::connection_pool* pool_;
    std::size_t pos_;
  };

  /// `size` unopened sessions.
  explicit SociPool(std::size_t size) : pool_(size) {}

  /// Leases a free session, waiting (without limit) for one.
  Lease acquire() { return Lease(&pool_, pool_.lease()); }

 private:
  soci::connection_pool pool_;
};

}  // namespace connpool_bench

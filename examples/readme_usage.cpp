// connpool - the usage example of README.md
// SPDX-License-Identifier: MIT

// README.md shows this file from its first #include to the end; keep the two identical.

#include <chrono>
#include <iostream>
#include <string>

#include <connpool/connpool.hpp>

using namespace std::chrono_literals;

// Stands in for a real client library. connpool uses ping() and close() because they exist.
struct Db {
  static Db connect(const std::string& url) { return Db{url}; }
  std::string query(const std::string& sql) { return url + ": " + sql; }
  bool ping() { return true; }  // validates an idle connection before reuse
  void close() {}               // called once, when the pool closes the connection
  std::string url;
};

int main() {
  connpool::ConnectionPool pool{[] { return Db::connect("postgres://db.example/app"); },
                                connpool::PoolOptions{.min_size = 2, .max_size = 16}};

  {
    auto db = pool.acquire(250ms);  // waits up to 250 ms, else throws connpool::AcquireTimeout
    std::cout << db->query("SELECT 1") << '\n';
  }  // the handle gives the connection back here

  if (auto db = pool.try_acquire()) {  // never waits: std::nullopt when the pool is exhausted
    std::cout << (*db)->query("SELECT 2") << '\n';
  }

  std::cout << pool.stats().to_json() << '\n';
}

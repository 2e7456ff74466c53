// connpool - redis: a pool of Redis connections shared by several threads
// SPDX-License-Identifier: MIT

// Worker threads borrow RedisConnection clients (redis_connection.hpp, over hiredis) from a
// connpool::ConnectionPool and increment counters; one of them switches to database 3 and
// leaves it that way, which RedisConnection::reset() undoes before the next borrower. At the end
// it checks the counters and prints the pool's statistics.
//
// Usage: redis [host:port] [--threads N] [--increments N]
//   host:port defaults to $CONNPOOL_REDIS_ADDR, else 127.0.0.1:63799 (scripts/redis-server.sh).

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "redis_connection.hpp"

using connpool_examples::RedisConnection;

int main(int argc, char** argv) {
  const char* env = std::getenv("CONNPOOL_REDIS_ADDR");
  std::string addr = env != nullptr ? env : "127.0.0.1:63799";
  int threads = 8;
  int increments = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else if (arg == "--increments" && i + 1 < argc) {
      increments = std::stoi(argv[++i]);
    } else {
      addr = argv[i];
    }
  }
  const std::string host = addr.substr(0, addr.rfind(':'));
  const int port = std::stoi(addr.substr(addr.rfind(':') + 1));
  try {
    connpool::ConnectionPool pool{[&] { return RedisConnection::connect(host, port); },
                                  connpool::PoolOptions{.min_size = 2, .max_size = 4}};
    pool.acquire()->command({"DEL", "connpool:example"});
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int i = 0; i < increments; ++i) {
          auto r = pool.acquire();
          r->command({"INCR", "connpool:example"});
          if (t == 0 && i == 0) {
            r->command({"SELECT", "3"});  // left selected: reset() restores database 0
          }
        }
      });
    }
    workers.clear();
    const std::string total = pool.acquire()->command({"GET", "connpool:example"});
    std::cout << pool.stats().to_json() << '\n';
    std::cout << "counter " << total << ", expected " << threads * increments << '\n';
    return total == std::to_string(threads * increments) ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "redis: " << e.what() << '\n';
    return 1;
  }
}

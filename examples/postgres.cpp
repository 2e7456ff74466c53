// connpool - postgres: a pool of PostgreSQL connections shared by several threads
// SPDX-License-Identifier: MIT

// Worker threads borrow PgConnection sessions (pg_connection.hpp, over libpq) from a
// connpool::ConnectionPool and run queries; one of them leaves session state behind (a SET and
// a temporary table) that PgConnection::reset() discards before the next borrower. At the end it
// prints the pool's statistics.
//
// Usage: postgres [conninfo] [--threads N] [--queries N]
//   conninfo defaults to $CONNPOOL_PG_CONNINFO, else "host=127.0.0.1 port=54329 user=connpool
//   dbname=connpool" (what scripts/pg-server.sh start sets up).

#include <atomic>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "pg_connection.hpp"

using connpool_examples::PgConnection;

int main(int argc, char** argv) {
  const char* env = std::getenv("CONNPOOL_PG_CONNINFO");
  std::string conninfo =
      env != nullptr ? env : "host=127.0.0.1 port=54329 user=connpool dbname=connpool";
  int threads = 8;
  int queries = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--threads" && i + 1 < argc) {
      threads = std::stoi(argv[++i]);
    } else if (arg == "--queries" && i + 1 < argc) {
      queries = std::stoi(argv[++i]);
    } else {
      conninfo = argv[i];
    }
  }
  try {
    connpool::ConnectionPool pool{[&] { return PgConnection::connect(conninfo); },
                                  connpool::PoolOptions{.min_size = 2, .max_size = 4}};
    std::atomic<int> wrong{0};
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        for (int q = 0; q < queries; ++q) {
          auto db = pool.acquire();
          const int n = t * 100000 + q;
          if (db->scalar("SELECT $1::int + 1", {std::to_string(n)}) != std::to_string(n + 1)) {
            wrong.fetch_add(1);
          }
          if (q == 0) {
            // State the next borrower must not see: reset() discards it.
            db->command("SET search_path TO pg_catalog; CREATE TEMP TABLE scratch(x int)");
          }
        }
      });
    }
    workers.clear();
    std::cout << pool.stats().to_json() << '\n';
    std::cout << threads * queries << " queries, " << wrong << " wrong results\n";
    return wrong == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "postgres: " << e.what() << '\n';
    return 1;
  }
}

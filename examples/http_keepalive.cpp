// connpool - http_keepalive: HTTP/1.1 keep-alive connections to a web server, shared by threads
// SPDX-License-Identifier: MIT

// Worker threads GET one path from a web server through a connpool::ConnectionPool of at most 4
// HttpConnection (http_connection.hpp: a plain POSIX socket, no HTTP library), so thousands of
// requests travel over a handful of TCP connections. Every response must be a 200 with the same
// body as the first one. At the end it prints the pool's statistics as JSON (created stays
// small, reused is close to acquired) and a summary; it exits 1 if any response was wrong or
// any request failed.
//
// Two habits for keep-alive connections, both in get_with_retry() below:
//   - after a network error, invalidate() the handle: the pool closes that connection instead
//     of lending it to the next caller;
//   - a server closes idle keep-alive connections (nginx: keepalive_timeout), and may do so just
//     after the pool's validation ping; a GET that then fails before any byte of its response
//     arrived (StaleConnection) is sent again on another connection.
//
// Usage: CONNPOOL_HTTP_ADDR=host:port http_keepalive [path] [--threads N] [--requests N]
//   scripts/nginx-server.sh start runs an nginx and prints its address; path defaults to /.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "http_connection.hpp"

using connpool_examples::HttpConnection;
using connpool_examples::HttpError;
using connpool_examples::Response;
using connpool_examples::StaleConnection;

/// GETs `path` through `pool`. A GET is idempotent, so when it fails on a reused connection the
/// server had already closed (StaleConnection), it is sent again on another connection. Each
/// stale connection met is invalidated, and at most max_size are open: max_size retries get past
/// every idle connection that was dead, to a fresh one (a fresh connection is never stale).
///
/// Throws: HttpError (the connection was invalidated), or what pool.acquire() throws.
template <class Pool>
Response get_with_retry(Pool& pool, const std::string& path) {
  for (std::size_t retries = 0;; ++retries) {
    auto conn = pool.acquire();
    try {
      return conn->get(path);
    } catch (const StaleConnection&) {
      conn.invalidate();  // closed by the server while idle: try another connection
      if (retries == pool.options().max_size) {
        throw;
      }
    } catch (const HttpError&) {
      conn.invalidate();  // broken in the middle of a request: never lend it again
      throw;
    }
  }
}

int main(int argc, char** argv) {
  const char* env = std::getenv("CONNPOOL_HTTP_ADDR");
  const std::string addr = env != nullptr ? env : "";
  if (addr.rfind(':') == std::string::npos) {
    std::cerr << "usage: CONNPOOL_HTTP_ADDR=host:port http_keepalive [path] [--threads N] "
                 "[--requests N]\n"
                 "  (scripts/nginx-server.sh start runs an nginx and prints its address)\n";
    return 2;
  }
  try {
    std::string path = "/";
    int threads = 8;
    int requests = 500;  // per thread
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == "--threads" && i + 1 < argc) {
        threads = std::stoi(argv[++i]);
      } else if (arg == "--requests" && i + 1 < argc) {
        requests = std::stoi(argv[++i]);
      } else {
        path = argv[i];
      }
    }
    const std::string host = addr.substr(0, addr.rfind(':'));
    const int port = std::stoi(addr.substr(addr.rfind(':') + 1));
    // HttpConnection's ping is a non-blocking peek, not a round trip: check every idle
    // connection before it is lent (validation_bypass 0), not only those idle for 500 ms.
    connpool::ConnectionPool pool{
        [&] { return HttpConnection::connect(host, port); },
        connpool::PoolOptions{.max_size = 4, .validation_bypass = std::chrono::milliseconds{0}}};
    const Response expected = get_with_retry(pool, path);
    if (expected.status != 200) {
      std::cerr << "http_keepalive: GET " << path << " answered " << expected.status << '\n';
      return 1;
    }
    std::atomic<int> wrong{0};
    std::atomic<int> failed{0};
    std::vector<std::jthread> workers;
    for (int t = 0; t < threads; ++t) {
      workers.emplace_back([&] {
        for (int i = 0; i < requests; ++i) {
          try {
            const Response r = get_with_retry(pool, path);
            if (r.status != 200 || r.body != expected.body) {
              wrong.fetch_add(1);
            }
          } catch (const std::exception& e) {
            if (failed.fetch_add(1) == 0) {
              std::cerr << "http_keepalive: " + std::string(e.what()) + '\n';  // the first only
            }
          }
        }
      });
    }
    workers.clear();  // joins
    const connpool::PoolStats stats = pool.stats();
    std::cout << stats.to_json() << '\n';
    std::cout << threads * requests + 1 << " GETs of " << path << " over " << stats.created
              << " connection(s): " << wrong << " wrong, " << failed << " failed\n";
    return wrong == 0 && failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "http_keepalive: " << e.what() << '\n';
    return 1;
  }
}

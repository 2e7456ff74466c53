// connpool - integration tests: a pool of HTTP/1.1 keep-alive connections to a real nginx
// SPDX-License-Identifier: MIT

// The server comes from CONNPOOL_HTTP_ADDR (host:port). It must be the nginx that
// scripts/nginx-server.sh starts (test-all.sh does it for you): the tests know the files it
// serves and rely on its settings, keepalive_timeout 1s everywhere and keepalive_requests 100
// under /limited/. Without a reachable server the binary is skipped (exit 77) with a message,
// unless CONNPOOL_REQUIRE_SERVERS=1, when that is a failure.
//
// Worker threads make no Catch2 assertion (Catch2 2 is not thread-safe): they count in atomics,
// and the main thread checks the counts once it has joined them.

#define CATCH_CONFIG_RUNNER

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <connpool/connpool.hpp>

#include "catch.hpp"
#include "http_connection.hpp"
#include "integration_main.hpp"
#include <poll.h>
#include <sys/socket.h>

using namespace std::chrono_literals;
using connpool_examples::HttpConnection;
using connpool_examples::Response;
using connpool_examples::StaleConnection;

namespace {

// The files of scripts/nginx-server.sh.
const std::string hello = "Hello from connpool's test nginx.\n";
const std::string ssi_page = "<p>before</p>\n" + hello + "\n<p>after</p>\n";

std::string big_file() {
  std::string out;
  for (int i = 1; i <= 4000; ++i) {
    std::array<char, 32> line{};
    std::snprintf(line.data(), line.size(), "connpool line %05d\n", i);
    out += line.data();
  }
  return out;
}

std::string address() {
  const char* env = std::getenv("CONNPOOL_HTTP_ADDR");
  return env != nullptr ? env : "";
}

HttpConnection open_connection() {
  const std::string addr = address();
  return HttpConnection::connect(addr.substr(0, addr.rfind(':')),
                                 std::stoi(addr.substr(addr.rfind(':') + 1)));
}

/// Validation on every reuse, no background thread.
connpool::PoolOptions checked(std::size_t max_size) {
  connpool::PoolOptions o;
  o.max_size = max_size;
  o.health_check_interval = 0ms;
  o.validation_bypass = 0ms;
  o.acquire_timeout = 10s;
  return o;
}

/// Waits (up to 10 s) until the server's close of the connection on `fd` is visible: the
/// socket turns readable, and a peek reads the end of the stream.
bool server_closed(int fd) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) {
      return false;
    }
    short events = POLLIN;
#ifdef POLLRDHUP
    events |= POLLRDHUP;
#endif
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n > 0) {
      char byte = 0;
      return ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
    }
    if (n < 0 && errno != EINTR) {
      return false;
    }
  }
}

}  // namespace

TEST_CASE("HTTP: 8 threads x 500 GETs through a pool of 4", "[integration][http]") {
  connpool::ConnectionPool pool{[] { return open_connection(); }, checked(4)};
  const std::string big = big_file();
  std::atomic<int> wrong{0};
  std::atomic<int> failed{0};
  std::vector<std::jthread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i) {
        try {
          auto conn = pool.acquire();
          // Mostly the small file; every 10th GET the 80 kB one (many reads), every 10th the
          // chunked page.
          const int kind = (t + i) % 10;
          const std::string& expected = kind == 0 ? big : kind == 1 ? ssi_page : hello;
          const Response r = conn->get(kind == 0   ? "/big.txt"
                                       : kind == 1 ? "/ssi/page.html"
                                                   : "/hello.txt");
          if (r.status != 200 || r.body != expected || !r.keep_alive || !conn->reusable()) {
            wrong.fetch_add(1);
          }
        } catch (...) {
          failed.fetch_add(1);
        }
      }
    });
  }
  threads.clear();
  CHECK(wrong == 0);
  CHECK(failed == 0);
  const auto s = pool.stats();
  CHECK(s.acquired == 4000);
  CHECK(s.created <= 4);
  CHECK(s.reused == s.acquired - s.created);
  CHECK(s.validation_failures == 0);
  CHECK(s.closed == 0);
}

TEST_CASE("HTTP: an idle connection closed by the server's keepalive_timeout is replaced",
          "[integration][http]") {
  connpool::ConnectionPool pool{[] { return open_connection(); }, checked(1)};
  int fd = -1;
  {
    auto conn = pool.acquire();
    const Response r = conn->get("/hello.txt");
    REQUIRE(r.status == 200);
    REQUIRE(r.body == hello);
    REQUIRE(r.keep_alive);
    fd = conn->native_handle();
  }
  // The connection is idle in the pool and nobody else uses it: watching its socket is safe.
  REQUIRE(server_closed(fd));  // keepalive_timeout 1s
  auto conn = pool.acquire();  // the ping sees the close; a new connection replaces it
  const Response r = conn->get("/hello.txt");
  CHECK(r.status == 200);
  CHECK(r.body == hello);
  const auto s = pool.stats();
  CHECK(s.validation_failures == 1);
  CHECK(s.created == 2);
  CHECK(s.closed == 1);
}

TEST_CASE("HTTP: without validation, a stale connection fails as such and the retry works",
          "[integration][http]") {
  connpool::PoolOptions o = checked(1);
  o.validate_on_acquire = false;
  connpool::ConnectionPool pool{[] { return open_connection(); }, o};
  int fd = -1;
  {
    auto conn = pool.acquire();
    REQUIRE(conn->get("/hello.txt").body == hello);
    fd = conn->native_handle();
  }
  REQUIRE(server_closed(fd));
  {
    auto conn = pool.acquire();
    REQUIRE(conn->native_handle() == fd);  // handed out unchecked
    // The retry, as examples/http_keepalive.cpp's get_with_retry() does it: the request never
    // reached a live server (StaleConnection), so invalidate and send it on another connection.
    REQUIRE_THROWS_AS(conn->get("/hello.txt"), StaleConnection);
    CHECK_FALSE(conn->reusable());
    conn.invalidate();
  }
  auto conn = pool.acquire();
  CHECK(conn->responses() == 0);  // a fresh connection
  const Response r = conn->get("/hello.txt");
  CHECK(r.status == 200);
  CHECK(r.body == hello);
  const auto s = pool.stats();
  CHECK(s.created == 2);
  CHECK(s.closed == 1);  // the stale one, invalidated
  CHECK(s.validation_failures == 0);
}

TEST_CASE("HTTP: a connection answered with Connection: close is never handed out again",
          "[integration][http]") {
  // nginx counts the requests of each connection, and answers the keepalive_requests-th (100
  // under /limited/) with "Connection: close" before closing it. 250 requests: connection 1
  // serves requests 1-100, connection 2 101-200, connection 3 201-250.
  connpool::ConnectionPool pool{[] { return open_connection(); }, checked(1)};
  int closes = 0;
  for (int i = 1; i <= 250; ++i) {
    auto conn = pool.acquire();
    REQUIRE(conn->reusable());  // never one the server said it would close
    const Response r = conn->get("/limited/hello.txt");
    REQUIRE(r.status == 200);
    REQUIRE(r.body == hello);
    if (!r.keep_alive) {
      ++closes;
      CHECK(i % 100 == 0);
      CHECK(conn->responses() == 100);
      CHECK_FALSE(conn->reusable());
    }
  }
  CHECK(closes == 2);
  const auto s = pool.stats();
  CHECK(s.acquired == 250);
  CHECK(s.created == 3);
  CHECK(s.validation_failures == 2);  // each closed connection failed its next ping
  CHECK(s.closed == 2);
}

TEST_CASE("HTTP: a 404 is a response, and the connection stays in use", "[integration][http]") {
  connpool::ConnectionPool pool{[] { return open_connection(); }, checked(1)};
  {
    auto conn = pool.acquire();
    const Response r = conn->get("/no-such-file.txt");
    CHECK(r.status == 404);
    CHECK(r.keep_alive);
    CHECK(conn->reusable());
  }
  auto conn = pool.acquire();
  const Response r = conn->get("/hello.txt");
  CHECK(r.status == 200);
  CHECK(r.body == hello);
  CHECK(conn->responses() == 2);  // the same connection
  const auto s = pool.stats();
  CHECK(s.created == 1);
  CHECK(s.reused == 1);
  CHECK(s.validation_failures == 0);
}

TEST_CASE("HTTP: a chunked response is decoded, and the connection stays in use",
          "[integration][http]") {
  // The raw response first, to be sure nginx really sends this page chunked.
  {
    HttpConnection raw = open_connection();
    const std::string request =
        "GET /ssi/page.html HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(raw.native_handle(), request.data(), request.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(request.size()));
    std::string received;
    std::array<char, 4096> buf{};
    ssize_t n = 0;
    while ((n = ::recv(raw.native_handle(), buf.data(), buf.size(), 0)) > 0) {
      received.append(buf.data(), static_cast<std::size_t>(n));
    }
    CHECK(received.find("\r\nTransfer-Encoding: chunked\r\n") != std::string::npos);
  }
  connpool::ConnectionPool pool{[] { return open_connection(); }, checked(1)};
  for (int i = 0; i < 3; ++i) {
    auto conn = pool.acquire();
    const Response r = conn->get("/ssi/page.html");
    CHECK(r.status == 200);
    CHECK(r.body == ssi_page);
    CHECK(r.keep_alive);
  }
  CHECK(pool.stats().created == 1);
}

int main(int argc, char** argv) {
  return connpool_test::run_if_reachable(
      "connpool_http_tests",
      []() -> std::string {
        if (address().rfind(':') == std::string::npos) {
          return "CONNPOOL_HTTP_ADDR (host:port) is not set (scripts/nginx-server.sh start "
                 "prints one)";
        }
        try {
          open_connection().close();
        } catch (const std::exception& e) {
          return "nginx at " + address() + " is unreachable: " + e.what();
        }
        return "";
      },
      argc, argv);
}

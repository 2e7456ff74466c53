// connpool - metrics_server: a pool's statistics served to Prometheus over HTTP
// SPDX-License-Identifier: MIT

// Worker threads use a pool of (pretend) database connections while a small HTTP server on
// 127.0.0.1 answers:
//   GET /metrics   PoolStats::to_prometheus(): the OpenTelemetry names, in the text format
//                  Prometheus scrapes (with --legacy, also the names from before)
//   GET /health    ConnectionPool::health(): 200 "ok", or 503 with the reason (a readiness probe)
//   GET /stats     PoolStats::to_json()
//   GET /in_use    ConnectionPool::in_use_report(), one line per connection out
// A leak_threshold and an on_leak hook show a leak report with the acquire's source location.
//
// Usage: metrics_server [--port N] [--seconds N] [--hold N] [--legacy] [--self-test]
//   --port N      listen on 127.0.0.1:N (default 0: an ephemeral port, printed at start)
//   --seconds N   serve for N seconds, then exit (default 30; 0 = until killed)
//   --hold N      after a second of work, stop the workers and keep N connections held, so that
//                 every figure stays still (for comparing a scrape with /stats)
//   --legacy      also serve the deprecated metric names
//   --self-test   fetch /metrics and /health once over a socket, check them and exit
// Try it:  ./metrics_server --port 9187 --seconds 60 &  curl -s 127.0.0.1:9187/metrics
// POSIX sockets only.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// A stand-in for a database session: "queries" take a few hundred microseconds.
struct FakeSession {
  int id = 0;
  void query() const { std::this_thread::sleep_for(std::chrono::microseconds(200 + id * 10)); }
  bool ping() const { return true; }
};

/// An HTTP answer.
struct Response {
  std::string status = "200 OK";
  std::string body;
};

/// The HTTP side: one thread accepting on a loopback socket; `route(path)` answers each GET.
class MetricsServer {
 public:
  template <class Route>
  MetricsServer(int port, Route route) : route_(std::move(route)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) {
      throw_errno("socket");
    }
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0) {
      const int e = errno;
      ::close(fd_);
      throw std::system_error(e, std::generic_category(), "bind/listen");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::jthread([this](std::stop_token stop) { serve(stop); });
  }

  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  ~MetricsServer() {
    thread_.request_stop();
    thread_.join();
    ::close(fd_);
  }

  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  void serve(const std::stop_token& stop) {
    while (!stop.stop_requested()) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) {
        continue;
      }
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) {
        continue;
      }
      char request[1024];
      const ssize_t n = ::recv(client, request, sizeof request - 1, 0);
      std::string_view first(request, n > 0 ? static_cast<std::size_t>(n) : 0);
      Response r{"400 Bad Request", "GET only\n"};
      if (first.rfind("GET ", 0) == 0) {
        first.remove_prefix(4);
        r = route_(first.substr(0, first.find(' ')));
      }
      const std::string response = "HTTP/1.1 " + r.status +
                                   "\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                   "Content-Length: " +
                                   std::to_string(r.body.size()) + "\r\nConnection: close\r\n\r\n" +
                                   r.body;
      std::size_t sent = 0;
      while (sent < response.size()) {
        const ssize_t w =
            ::send(client, response.data() + sent, response.size() - sent, MSG_NOSIGNAL);
        if (w <= 0) {
          break;
        }
        sent += static_cast<std::size_t>(w);
      }
      ::close(client);
    }
  }

  std::function<Response(std::string_view)> route_;
  int fd_ = -1;
  int port_ = 0;
  std::jthread thread_;
};

/// GET `path` from 127.0.0.1:port; returns the status line's code and the body.
std::pair<int, std::string> get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw_errno("socket");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "connect");
  }
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    response.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 ", 0) != 0 || body == std::string::npos) {
    throw std::runtime_error("unexpected response: " + response.substr(0, 80));
  }
  return {std::stoi(response.substr(9, 3)), response.substr(body + 4)};
}

/// The value of the sample `name` (exactly, labels included) in `text`, or -1.
double sample(const std::string& text, const std::string& name) {
  const std::size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) {
    return -1;
  }
  return std::stod(text.substr(at + name.size() + 2));
}

}  // namespace

int main(int argc, char** argv) {
  int port = 0;
  int seconds = 30;
  int hold = -1;
  bool legacy = false;
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      port = std::stoi(argv[++i]);
    } else if (arg == "--seconds" && i + 1 < argc) {
      seconds = std::stoi(argv[++i]);
    } else if (arg == "--hold" && i + 1 < argc) {
      hold = std::stoi(argv[++i]);
    } else if (arg == "--legacy") {
      legacy = true;
    } else if (arg == "--self-test") {
      self_test = true;
    } else {
      std::cerr << "usage: metrics_server [--port N] [--seconds N] [--hold N] [--legacy] "
                   "[--self-test]\n";
      return 2;
    }
  }

  try {
    std::atomic<int> next_id{1};
    std::atomic<int> leaks{0};
    connpool::PoolOptions options{.min_size = 2, .max_size = 4};
    options.name = "main";
    options.leak_threshold = 100ms;
    options.health_p99_wait = 250ms;
    options.on_leak = [&](const connpool::LeakReport& r) {
      leaks.fetch_add(1);
      std::cerr << "leak: connection " << r.connection_id << " held for "
                << std::chrono::duration_cast<std::chrono::milliseconds>(r.held_for).count()
                << " ms, acquired at " << r.site.file_name() << ':' << r.site.line() << '\n';
    };
    options.on_leak_end = [](const connpool::PoolEvent& e) {
      std::cerr << "leak ended: connection " << e.connection_id << " came back after "
                << std::chrono::duration_cast<std::chrono::milliseconds>(e.held_for).count()
                << " ms\n";
    };
    connpool::ConnectionPool pool{[&] { return FakeSession{next_id++}; }, options};

    connpool::PrometheusOptions prometheus;
    prometheus.legacy_names = legacy;
    MetricsServer server(port, [&](std::string_view path) -> Response {
      if (path == "/metrics") {
        return {"200 OK", pool.stats().to_prometheus(prometheus)};
      }
      if (path == "/health") {
        const connpool::HealthReport h = pool.health(200ms);
        return {h.ok ? "200 OK" : "503 Service Unavailable", h.ok ? "ok\n" : h.reason + "\n"};
      }
      if (path == "/stats") {
        return {"200 OK", pool.stats().to_json() + "\n"};
      }
      if (path == "/in_use") {
        std::string body;
        for (const connpool::InUseConnection& c : pool.in_use_report()) {
          body += "connection " + std::to_string(c.connection_id) + " held " +
                  std::to_string(
                      std::chrono::duration_cast<std::chrono::milliseconds>(c.held_for).count()) +
                  " ms, acquired at " + c.site.file_name() + ":" + std::to_string(c.site.line()) +
                  "\n";
        }
        return {"200 OK", body};
      }
      return {"404 Not Found", "try /metrics, /health, /stats or /in_use\n"};
    });
    std::cout << "serving http://127.0.0.1:" << server.port() << "/metrics" << std::endl;

    std::atomic<bool> stop{false};
    std::vector<std::jthread> workers;
    for (int t = 0; t < 6; ++t) {
      workers.emplace_back([&] {
        while (!stop.load()) {
          auto session = pool.acquire(1s);
          session->query();
        }
      });
    }
    // One borrower forgets to give its connection back for a while: a leak report, then its end.
    {
      auto forgotten = pool.acquire();
      std::this_thread::sleep_for(300ms);
    }

    std::vector<connpool::PooledHandle<FakeSession>> held;
    if (hold >= 0) {
      std::this_thread::sleep_for(1s);
      stop.store(true);
      workers.clear();
      for (int i = 0; i < hold; ++i) {
        held.push_back(pool.acquire());
      }
      std::cout << "holding " << hold << " connections" << std::endl;
    }

    int rc = 0;
    if (self_test) {
      const auto [code, body] = get(server.port(), "/metrics");
      const std::string pool_label = "{db_client_connection_pool_name=\"main\"}";
      const double max_conns = sample(body, "db_client_connection_max" + pool_label);
      const double waits =
          sample(body, "db_client_connection_wait_time_seconds_count" + pool_label);
      const double uses = sample(body, "db_client_connection_use_time_seconds_count" + pool_label);
      const auto [health_code, health_body] = get(server.port(), "/health");
      std::cout << body;
      if (code != 200 || waits < 1 || uses < 1 || max_conns != 4 || leaks.load() < 1 ||
          body.find("# TYPE db_client_connection_wait_time_seconds histogram") ==
              std::string::npos ||
          health_code != 200 || health_body != "ok\n") {
        std::cerr << "self-test: unexpected metrics (waits " << waits << ", uses " << uses
                  << ", max " << max_conns << ", leaks " << leaks.load() << ", /health "
                  << health_code << " " << health_body << ")\n";
        rc = 1;
      } else {
        std::cout << "self-test: ok (" << waits << " acquires, " << leaks.load()
                  << " leak, /health ok)\n";
      }
    } else if (seconds > 0) {
      std::this_thread::sleep_for(std::chrono::seconds(seconds));
    } else {
      for (;;) {
        std::this_thread::sleep_for(1h);
      }
    }
    stop.store(true);
    workers.clear();
    return rc;
  } catch (const std::exception& e) {
    std::cerr << "metrics_server: " << e.what() << '\n';
    return 1;
  }
}

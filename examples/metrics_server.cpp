// connpool - metrics_server: a pool's statistics served to Prometheus over HTTP
// SPDX-License-Identifier: MIT

// Worker threads use a pool of (pretend) database connections while a small HTTP server on
// 127.0.0.1 answers GET /metrics with PoolStats::to_prometheus(), in the text format Prometheus
// scrapes. A leak_threshold and an on_leak hook show the leak counter, and an on_close hook
// counts closes by reason.
//
// Usage: metrics_server [--port N] [--seconds N] [--self-test]
//   --port N      listen on 127.0.0.1:N (default 0: an ephemeral port, printed at start)
//   --seconds N   serve for N seconds, then exit (default 30; 0 = until killed)
//   --self-test   scrape /metrics once over a socket, check the figures and exit (CI runs this)
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

/// The HTTP side: one thread accepting on a loopback socket; every request gets the metrics.
class MetricsServer {
 public:
  template <class Render>
  MetricsServer(int port, Render render) : render_(std::move(render)) {
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
      const std::string_view first(request, n > 0 ? static_cast<std::size_t>(n) : 0);
      std::string body;
      std::string status = "200 OK";
      if (first.rfind("GET /metrics", 0) == 0) {
        body = render_();
      } else {
        status = "404 Not Found";
        body = "try GET /metrics\n";
      }
      const std::string response = "HTTP/1.1 " + status +
                                   "\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                   "Content-Length: " +
                                   std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                                   body;
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

  std::function<std::string()> render_;
  int fd_ = -1;
  int port_ = 0;
  std::jthread thread_;
};

/// GET /metrics from 127.0.0.1:port; returns the body.
std::string scrape(int port) {
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
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
    response.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  const std::size_t body = response.find("\r\n\r\n");
  if (response.rfind("HTTP/1.1 200", 0) != 0 || body == std::string::npos) {
    throw std::runtime_error("unexpected response: " + response.substr(0, 80));
  }
  return response.substr(body + 4);
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
  bool self_test = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--port" && i + 1 < argc) {
      port = std::stoi(argv[++i]);
    } else if (arg == "--seconds" && i + 1 < argc) {
      seconds = std::stoi(argv[++i]);
    } else if (arg == "--self-test") {
      self_test = true;
    } else {
      std::cerr << "usage: metrics_server [--port N] [--seconds N] [--self-test]\n";
      return 2;
    }
  }

  try {
    std::atomic<int> next_id{1};
    std::atomic<int> leaks{0};
    connpool::PoolOptions options{.min_size = 2, .max_size = 4};
    options.leak_threshold = 100ms;
    options.on_leak = [&](const connpool::LeakReport& r) {
      leaks.fetch_add(1);
      std::cerr << "leak: connection " << r.connection_id << " held for "
                << std::chrono::duration_cast<std::chrono::milliseconds>(r.held_for).count()
                << " ms\n";
    };
    connpool::ConnectionPool pool{[&] { return FakeSession{next_id++}; }, options};

    MetricsServer server(port, [&] {
      return pool.stats().to_prometheus("connpool", {{"pool", "main"}});
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
    // One borrower forgets to give its connection back for a while: a leak report.
    {
      auto forgotten = pool.acquire();
      std::this_thread::sleep_for(300ms);
    }

    int rc = 0;
    if (self_test) {
      const std::string body = scrape(server.port());
      const double acquires = sample(body, "connpool_acquires_total{pool=\"main\"}");
      const double leaked = sample(body, "connpool_leaks_total{pool=\"main\"}");
      const double max_conns = sample(body, "connpool_max_connections{pool=\"main\"}");
      std::cout << body;
      if (acquires < 1 || leaked < 1 || max_conns != 4 ||
          body.find("# TYPE connpool_acquires_total counter") == std::string::npos) {
        std::cerr << "self-test: unexpected metrics (acquires " << acquires << ", leaks " << leaked
                  << ", max " << max_conns << ")\n";
        rc = 1;
      } else {
        std::cout << "self-test: ok (" << acquires << " acquires, " << leaked << " leak)\n";
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

// connpool - quickstart: a pool of real TCP connections shared by several threads
// SPDX-License-Identifier: MIT

// The program starts a line-echo server on an ephemeral port of 127.0.0.1, then runs worker
// threads that borrow connections to it from a connpool::ConnectionPool, send a line, read the
// echo and check it. Once a second it prints the request count and the pool's gauges; at the
// end it prints the pool's PoolStats as JSON and a one-line summary. It exits with 1 if any
// echo was wrong, or if anything else failed.
//
// Like nginx's keepalive_requests, the server closes a connection after it has answered a
// number of requests on it (--server-max-requests, 0 = never). The workers see that either
// through the pool's validation ping, or as an I/O error, after which they invalidate the
// handle and retry the request on a fresh connection.
//
// Usage: quickstart [--seconds N] [--threads N] [--server-max-requests N]
// POSIX sockets only: builds on Linux and other POSIX systems.

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iomanip>
#include <iostream>
#include <limits>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <connpool/connpool.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

namespace {

using namespace std::chrono_literals;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

/// Owns a file descriptor and closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { close(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

  void close() noexcept {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  int fd_ = -1;
};

/// Sends all of `data`, or as much as the socket takes now when `flags` has MSG_DONTWAIT.
///
/// Returns: the number of bytes sent, or -1 with errno set.
/// MSG_NOSIGNAL: writing to a connection the peer has closed fails with EPIPE instead of
/// killing the process with SIGPIPE.
ssize_t send_some(int fd, std::string_view data, int flags) noexcept {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, flags | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if ((flags & MSG_DONTWAIT) != 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        break;
      }
      return -1;
    }
    sent += static_cast<std::size_t>(n);
  }
  return static_cast<ssize_t>(sent);
}

/// A TCP socket bound to 127.0.0.1 on a port the kernel chooses, listening.
UniqueFd listen_on_loopback() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
  if (!fd) {
    throw_errno("socket");
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;  // ephemeral: never collides with another program's port
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    throw_errno("bind");
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    throw_errno("listen");
  }
  return fd;
}

/// A line-echo server on 127.0.0.1, served by one thread with poll().
///
/// Every byte a client sends is sent back unchanged. After a client has been answered
/// `max_requests` lines, the server closes its connection (0 = never).
///
/// Why one poll() thread rather than a thread per client: connections come and go all the
/// time here (the server closes them on purpose), and a single loop needs no bookkeeping of
/// finished threads. Client sockets are used with MSG_DONTWAIT, so a slow reader cannot stall
/// the others; unsent bytes wait in the client's `pending` buffer for POLLOUT.
///
/// Thread safety: port() may be called from any thread; stop() and the destructor from the
/// thread that constructed the server.
/// Lifetime: stop() (or the destructor) ends the thread and closes every server-side socket.
class EchoServer {
 public:
  explicit EchoServer(std::uint64_t max_requests)
      : listener_(listen_on_loopback()), max_requests_(max_requests) {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    if (::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw_errno("getsockname");
    }
    port_ = ntohs(addr.sin_port);
    std::array<int, 2> pipe_fds{};
    if (::pipe(pipe_fds.data()) != 0) {
      throw_errno("pipe");
    }
    stop_read_ = UniqueFd(pipe_fds[0]);
    stop_write_ = UniqueFd(pipe_fds[1]);
    thread_ = std::thread([this] { run(); });
  }

  EchoServer(const EchoServer&) = delete;
  EchoServer& operator=(const EchoServer&) = delete;
  ~EchoServer() { stop(); }

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }

  /// Stops the server thread and closes all its sockets. Idempotent.
  void stop() noexcept {
    if (!thread_.joinable()) {
      return;
    }
    // The byte is never read: the pipe stays readable, and the loop sees it on its next poll.
    const char byte = 0;
    while (::write(stop_write_.get(), &byte, 1) < 0 && errno == EINTR) {
    }
    thread_.join();
  }

 private:
  struct Client {
    UniqueFd fd;
    std::string pending;         // received, not yet echoed back
    std::uint64_t answered = 0;  // lines received so far (each is echoed)
  };

  void run() noexcept {
    std::vector<Client> clients;
    std::vector<pollfd> fds;
    for (;;) {
      fds.clear();
      fds.push_back({stop_read_.get(), POLLIN, 0});
      fds.push_back({listener_.get(), POLLIN, 0});
      for (const Client& c : clients) {
        fds.push_back({c.fd.get(), static_cast<short>(c.pending.empty() ? POLLIN : POLLOUT), 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) {
        if (errno == EINTR) {
          continue;
        }
        return;  // cannot happen with valid descriptors; the workers would then see EOF
      }
      if (fds[0].revents != 0) {
        return;  // stop(); `clients` closes every connection on the way out
      }
      // Serve the clients polled this round (fds[2 + i] is clients[i]), then drop the closed.
      for (std::size_t i = 0; i < clients.size(); ++i) {
        if (fds[2 + i].revents != 0 && !serve(clients[i])) {
          clients[i].fd.close();
        }
      }
      std::erase_if(clients, [](const Client& c) { return !c.fd; });
      if ((fds[1].revents & POLLIN) != 0) {
        UniqueFd fd(::accept(listener_.get(), nullptr, nullptr));
        if (fd) {  // else the client gave up before we accepted (ECONNABORTED): nothing to do
          clients.push_back(Client{std::move(fd), {}, 0});
        }
      }
    }
  }

  /// Reads what the client sent and echoes it. Returns false when the connection must close.
  bool serve(Client& c) noexcept {
    if (c.pending.empty()) {
      std::array<char, 4096> buf{};
      const ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n == 0) {
        return false;  // the client closed: the pool closed or invalidated the connection
      }
      if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
      }
      c.pending.assign(buf.data(), static_cast<std::size_t>(n));
      c.answered +=
          static_cast<std::uint64_t>(std::count(c.pending.begin(), c.pending.end(), '\n'));
    }
    const ssize_t sent = send_some(c.fd.get(), c.pending, MSG_DONTWAIT);
    if (sent < 0) {
      return false;
    }
    c.pending.erase(0, static_cast<std::size_t>(sent));
    // Close only once the last answer is out: the client then reads a whole reply, and the
    // close (a FIN, since nothing unread is left on our side) reaches it before its next request.
    return !(max_requests_ != 0 && c.answered >= max_requests_ && c.pending.empty());
  }

  UniqueFd listener_;
  UniqueFd stop_read_;
  UniqueFd stop_write_;
  std::uint16_t port_ = 0;
  std::uint64_t max_requests_;
  std::thread thread_;  // runs run(); owns every client socket
};

/// One client connection to the echo server: the `Conn` of the pool.
///
/// connpool needs only a movable type. It finds ping() and close() through
/// connpool::connection_traits, so it validates idle connections with ping() and closes them
/// with close(); TcpConnection has no reset(), so nothing runs when a handle gives it back.
///
/// Thread safety: one thread at a time, which is what a PooledHandle guarantees.
class TcpConnection {
 public:
  /// Connects to 127.0.0.1:`port`. Throws: std::system_error. The pool calls this from its
  /// factory, outside its lock; the exception reaches the acquire() that needed the connection.
  static TcpConnection connect(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
    if (!fd) {
      throw_errno("socket");
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      throw_errno("connect");
    }
    // Request/response with small messages: Nagle's algorithm would hold each line back.
    const int one = 1;
    if (::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
      throw_errno("setsockopt(TCP_NODELAY)");
    }
    // A server that stops answering fails the request after 2 s instead of hanging a worker.
    const timeval timeout{2, 0};
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) != 0) {
      throw_errno("setsockopt(SO_RCVTIMEO)");
    }
    return TcpConnection(std::move(fd));
  }

  /// Sends `line` and a newline, and returns the server's reply line without its newline.
  /// Throws: std::system_error on any I/O error, on EOF and on a 2 s receive timeout; the
  /// connection is then unusable, and the caller should invalidate its handle.
  std::string round_trip(std::string_view line) {
    std::string request(line);
    request += '\n';
    if (send_some(fd_.get(), request, 0) < 0) {
      throw_errno("send");
    }
    for (;;) {
      if (const auto end = received_.find('\n'); end != std::string::npos) {
        std::string reply = received_.substr(0, end);
        received_.erase(0, end + 1);
        return reply;
      }
      std::array<char, 4096> buf{};
      const ssize_t n = ::recv(fd_.get(), buf.data(), buf.size(), 0);
      if (n > 0) {
        received_.append(buf.data(), static_cast<std::size_t>(n));
      } else if (n == 0) {
        throw std::system_error(std::make_error_code(std::errc::connection_reset),
                                "recv: the server closed the connection");
      } else if (errno != EINTR) {
        throw_errno("recv");  // EAGAIN here means SO_RCVTIMEO expired
      }
    }
  }

  /// Whether the connection is still usable, without a round trip: a non-blocking peek.
  ///
  /// Returns: true when there is nothing to read (the peer has sent neither data nor FIN);
  /// false on EOF (the server closed the connection), on a socket error, and when unread bytes
  /// are waiting: in a request/response protocol, unsolicited bytes mean the stream is out of
  /// step. The pool calls this before handing out an idle connection (validate_on_acquire).
  bool ping() noexcept {
    if (!fd_ || !received_.empty()) {
      return false;
    }
    char byte = 0;
    const ssize_t n = ::recv(fd_.get(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
    return false;  // 0: EOF; > 0: unsolicited bytes
  }

  /// Closes the socket. The pool calls it once, when it closes the connection.
  void close() noexcept { fd_.close(); }

 private:
  explicit TcpConnection(UniqueFd fd) noexcept : fd_(std::move(fd)) {}

  UniqueFd fd_;
  std::string received_;  // bytes received after the end of the last reply
};

/// What the workers count; read by the main thread while they run.
struct Counters {
  std::atomic<std::uint64_t> requests{0};    // round trips with a correct echo
  std::atomic<std::uint64_t> mismatches{0};  // round trips whose echo differed
  std::atomic<std::uint64_t> io_errors{0};   // round trips that failed; retried elsewhere
  std::atomic<std::uint64_t> timeouts{0};    // acquires that timed out; retried
};

/// The first error that ends the run early (a connect failure, say).
class FirstError {
 public:
  void set(std::string message) {
    const std::lock_guard lock(mutex_);
    if (message_.empty()) {
      message_ = std::move(message);
    }
  }
  [[nodiscard]] std::string get() const {
    const std::lock_guard lock(mutex_);
    return message_;
  }

 private:
  mutable std::mutex mutex_;  // guards message_
  std::string message_;
};

/// One worker: borrow a connection, do one round trip, give the connection back; repeat.
template <class Pool>
void run_worker(Pool& pool,
                int id,
                const std::atomic<bool>& stop,
                Counters& counters,
                FirstError& first_error) {
  try {
    std::uint64_t sequence = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const std::string request =
          "worker " + std::to_string(id) + " request " + std::to_string(sequence);
      connpool::PooledHandle<TcpConnection> conn;
      try {
        conn = pool.acquire(2s);  // 8 workers share 4 connections: most acquires wait a little
      } catch (const connpool::AcquireTimeout&) {
        counters.timeouts.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      try {
        if (conn->round_trip(request) == request) {
          counters.requests.fetch_add(1, std::memory_order_relaxed);
        } else {
          counters.mismatches.fetch_add(1, std::memory_order_relaxed);
          conn.invalidate();  // the stream is out of step: never give this connection to anyone
        }
        ++sequence;
      } catch (const std::system_error&) {
        // Typically the server closed the connection. Close it instead of returning it to the
        // pool, which opens a replacement on demand; the same request is retried.
        conn.invalidate();
        counters.io_errors.fetch_add(1, std::memory_order_relaxed);
      }
    }  // `conn` goes back to the pool at the end of each iteration
  } catch (const std::exception& e) {
    first_error.set("worker " + std::to_string(id) + ": " + e.what());
  }
}

struct Settings {
  int seconds = 3;
  int threads = 8;
  std::uint64_t server_max_requests = 1000;  // nginx's default keepalive_requests
};

constexpr std::string_view usage =
    "usage: quickstart [--seconds N] [--threads N] [--server-max-requests N]\n"
    "  --seconds N              run for N seconds (1..3600, default 3)\n"
    "  --threads N              worker threads (1..256, default 8)\n"
    "  --server-max-requests N  the server closes a connection after N requests\n"
    "                           (0 = never, default 1000)\n";

template <class T>
bool parse_number(std::string_view text, T min, T max, T& out) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || value < min || value > max) {
    return false;
  }
  out = value;
  return true;
}

std::optional<Settings> parse_args(int argc, char** argv) {
  Settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) {
      return std::nullopt;  // every option takes a value
    }
    const std::string_view value = argv[++i];
    bool ok = false;
    if (arg == "--seconds") {
      ok = parse_number(value, 1, 3600, s.seconds);
    } else if (arg == "--threads") {
      ok = parse_number(value, 1, 256, s.threads);
    } else if (arg == "--server-max-requests") {
      ok = parse_number<std::uint64_t>(value, 0, std::numeric_limits<std::uint64_t>::max(),
                                       s.server_max_requests);
    }
    if (!ok) {
      return std::nullopt;
    }
  }
  return s;
}

int run(const Settings& settings) {
  EchoServer server(settings.server_max_requests);

  // min_size 2: two connections are opened now (warm-up) and kept open by maintenance.
  // max_size 4: at most four sockets, however many threads ask; the others wait (FIFO).
  // validation_bypass 0: ping before every reuse. Our ping() is a non-blocking peek (one
  // syscall, no round trip), so it is cheap enough to catch every connection the server closed.
  connpool::ConnectionPool pool{
      [port = server.port()] { return TcpConnection::connect(port); },
      connpool::PoolOptions{
          .min_size = 2, .max_size = 4, .acquire_timeout = 2s, .validation_bypass = 0ms}};

  std::cout << "quickstart: echo server on 127.0.0.1:" << server.port()
            << "; worker threads: " << settings.threads
            << ", pool max_size: " << pool.options().max_size << ", seconds: " << settings.seconds
            << '\n';

  std::atomic<bool> stop{false};
  Counters counters;
  FirstError first_error;
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(settings.threads));
  const auto start = std::chrono::steady_clock::now();
  for (int id = 0; id < settings.threads; ++id) {
    workers.emplace_back([&, id] { run_worker(pool, id, stop, counters, first_error); });
  }

  // Progress, once per second. The gauges come from a snapshot taken while the workers run; the
  // wait quantiles from the acquires of that second (this snapshot's wait_time histogram less
  // the last one's), as bucket bounds: "p99 <= 512 us" means 99 % waited 512 us or less.
  std::uint64_t previous = 0;
  connpool::Histogram previous_wait;
  for (int second = 1; second <= settings.seconds; ++second) {
    std::this_thread::sleep_until(start + std::chrono::seconds(second));
    const std::uint64_t requests = counters.requests.load(std::memory_order_relaxed);
    const connpool::PoolStats s = pool.stats();
    connpool::Histogram wait = s.wait_time;
    wait -= previous_wait;
    std::cout << "[" << second << "s] requests " << requests << " (" << requests - previous
              << "/s)  in use " << s.in_use << "  idle " << s.idle << "  waiters " << s.pending
              << "  wait p50 <= " << wait.quantile(0.5).count()
              << " us  p99 <= " << wait.quantile(0.99).count() << " us"
              << std::endl;  // flushed: the line shows at once even when stdout is a pipe
    previous = requests;
    previous_wait = s.wait_time;
  }
  stop.store(true, std::memory_order_relaxed);
  for (std::thread& w : workers) {
    w.join();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

  // The workers are done: every figure of this snapshot is exact.
  std::cout << pool.stats().to_json() << '\n';
  pool.close();
  server.stop();

  const std::uint64_t requests = counters.requests.load();
  const std::uint64_t mismatches = counters.mismatches.load();
  const std::string error = first_error.get();
  const bool ok = mismatches == 0 && error.empty();
  std::cout << "quickstart: " << (ok ? "OK" : "FAILED") << ": " << requests << " requests in "
            << std::fixed << std::setprecision(2) << elapsed.count() << " s ("
            << static_cast<std::uint64_t>(static_cast<double>(requests) / elapsed.count())
            << "/s), " << mismatches << " mismatched echoes, " << counters.io_errors.load()
            << " failed round trips retried, " << counters.timeouts.load() << " acquire timeouts"
            << std::endl;
  if (!error.empty()) {
    std::cerr << "quickstart: " << error << '\n';
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
    std::cout << usage;
    return 0;
  }
  const std::optional<Settings> settings = parse_args(argc, argv);
  if (!settings) {
    std::cerr << usage;
    return 2;
  }
  try {
    return run(*settings);
  } catch (const std::exception& e) {
    std::cerr << "quickstart: error: " << e.what() << '\n';
    return 1;
  }
}

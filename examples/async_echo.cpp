// connpool - async_echo: Asio coroutines sharing an AsyncConnectionPool of TCP connections
// SPDX-License-Identifier: MIT

// The program runs an Asio TCP echo server on an ephemeral port of 127.0.0.1 and, on the same
// io_context, many client coroutines (asio::co_spawn + asio::use_awaitable) that share a
// connpool::AsyncConnectionPool of a few TCP connections to it. Each client borrows a connection
// with connpool::asio::async_acquire, sends a line, reads the echo, checks it and gives the
// connection back, a number of times (or for a number of seconds). The pool opens its
// connections with an asynchronous factory (a connpool::Task that awaits Asio's async_connect),
// and resumes waiting coroutines on the io_context (connpool::asio::ExecutorScheduler). At the
// end it prints the pool's PoolStats as JSON and a summary line, and exits with 1 if any echo
// was wrong or any request failed.
//
// Usage: async_echo [--clients N] [--messages N] [--seconds N] [--threads N] [--pool-size N]
// Needs standalone Asio (Debian: libasio-dev).

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <asio.hpp>

#include <connpool/asio.hpp>
#include <connpool/async_pool.hpp>
#include <connpool/task.hpp>

namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

// --- The server -------------------------------------------------------------------------------

/// Echoes everything the client sends until it closes the connection.
asio::awaitable<void> echo_session(tcp::socket socket) {
  std::array<char, 4096> buf{};
  for (;;) {
    asio::error_code ec;
    const std::size_t n = co_await socket.async_read_some(
        asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;  // EOF: the pool closed the connection (or a reset: nothing to answer)
    }
    co_await asio::async_write(socket, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      co_return;
    }
  }
}

/// Accepts connections until the acceptor is closed, each served by an echo_session running on
/// `sessions` (the acceptor's own executor is a strand, which would serialise them all).
asio::awaitable<void> accept_loop(tcp::acceptor& acceptor,
                                  asio::io_context::executor_type sessions) {
  for (;;) {
    asio::error_code ec;
    tcp::socket socket =
        co_await acceptor.async_accept(sessions, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::operation_aborted) {
      co_return;  // closed by shutdown()
    }
    if (!ec) {
      asio::co_spawn(sessions, echo_session(std::move(socket)), asio::detached);
    }  // else the client gave up before we accepted: nothing to do
  }
}

// --- The connection and its factory -----------------------------------------------------------

/// One client connection to the echo server: the `Conn` of the pool.
///
/// connpool needs only a movable type; it finds close() through connpool::connection_traits and
/// calls it once, when it closes the connection. There is no ping(): this server never closes a
/// connection by itself (see quickstart.cpp for validation of idle connections).
///
/// Thread safety: one coroutine at a time, which is what a PooledHandle guarantees; the pool's
/// hand-off orders the accesses of successive holders, whatever thread they run on.
class EchoConnection {
 public:
  explicit EchoConnection(tcp::socket socket) noexcept : socket_(std::move(socket)) {}

  /// Sends `line` and a newline, and returns the server's reply line without its newline.
  /// Throws: asio::system_error (a std::system_error) on any I/O error; the connection is then
  /// unusable, and the caller should invalidate its handle.
  asio::awaitable<std::string> round_trip(std::string line) {
    line += '\n';
    co_await asio::async_write(socket_, asio::buffer(line), asio::use_awaitable);
    const std::size_t n = co_await asio::async_read_until(socket_, asio::dynamic_buffer(received_),
                                                          '\n', asio::use_awaitable);
    std::string reply = received_.substr(0, n - 1);
    received_.erase(0, n);
    co_return reply;
  }

  /// Closes the socket. The pool calls it once, when it closes the connection.
  void close() noexcept {
    asio::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  tcp::socket socket_;
  std::string received_;  // bytes received after the end of the last reply
};

/// Lets a connpool::Task await Asio's async_connect: the completion handler resumes the task, on
/// the socket's executor.
class ConnectAwaiter {
 public:
  ConnectAwaiter(tcp::socket& socket, tcp::endpoint endpoint) noexcept
      : socket_(&socket), endpoint_(endpoint) {}

  bool await_ready() const noexcept { return false; }

  void await_suspend(std::coroutine_handle<> task) {
    socket_->async_connect(endpoint_, [this, task](const asio::error_code& ec) {
      error_ = ec;
      task.resume();
    });
  }

  void await_resume() const {
    if (error_) {
      throw asio::system_error(error_, "connect");
    }
  }

 private:
  tcp::socket* socket_;
  tcp::endpoint endpoint_;
  asio::error_code error_;
};

/// The pool's factory: an asynchronous connect, so that opening a connection blocks no thread.
///
/// Why min_size is 0 with this factory: warm-up would drive the Task to completion on the
/// constructing thread, which must then not be the only thread that runs the io_context.
struct EchoConnector {
  asio::io_context::executor_type executor;
  tcp::endpoint server;

  connpool::Task<EchoConnection> operator()() const {
    tcp::socket socket(executor);
    co_await ConnectAwaiter(socket, server);
    socket.set_option(tcp::no_delay(true));  // small request/response lines: no Nagle delay
    co_return EchoConnection(std::move(socket));
  }
};

using Pool = connpool::AsyncConnectionPool<EchoConnection, EchoConnector>;

// --- The clients ------------------------------------------------------------------------------

/// What the clients count; read once the io_context has stopped.
struct Counters {
  std::atomic<std::uint64_t> echoes{0};      // round trips with a correct echo
  std::atomic<std::uint64_t> mismatches{0};  // round trips whose echo differed
  std::atomic<std::uint64_t> io_errors{0};   // round trips that failed
  std::atomic<std::uint64_t> timeouts{0};    // acquires that timed out
  std::atomic<int> finished{0};              // clients done
};

/// The first error that ended a client with an exception.
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

struct Settings {
  int clients = 200;
  int messages = 50;  // per client, when seconds is 0
  int seconds = 0;    // run for this long instead of a fixed number of messages
  int threads = 2;
  int pool_size = 8;
};

/// One client: borrow a connection, one round trip, give it back; `messages` times, or until
/// `deadline`.
asio::awaitable<void> run_client(Pool& pool,
                                 int id,
                                 const Settings& settings,
                                 std::chrono::steady_clock::time_point deadline,
                                 Counters& counters) {
  for (int i = 0;
       settings.seconds > 0 ? std::chrono::steady_clock::now() < deadline : i < settings.messages;
       ++i) {
    const std::string request = "client " + std::to_string(id) + " message " + std::to_string(i);
    connpool::PooledHandle<EchoConnection> conn;
    try {
      // 200 clients share 8 connections: most acquires wait in the pool's FIFO queue, which
      // suspends the coroutine and blocks no thread.
      conn = co_await connpool::asio::async_acquire(pool, 5s, asio::use_awaitable);
    } catch (const connpool::AcquireTimeout&) {
      counters.timeouts.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    try {
      if (co_await conn->round_trip(request) == request) {
        counters.echoes.fetch_add(1, std::memory_order_relaxed);
      } else {
        counters.mismatches.fetch_add(1, std::memory_order_relaxed);
        conn.invalidate();  // the stream is out of step: never give this connection to anyone
      }
    } catch (const std::system_error&) {
      counters.io_errors.fetch_add(1, std::memory_order_relaxed);
      conn.invalidate();  // closed instead of returned; the pool opens another on demand
    }
  }  // `conn` goes back to the pool at the end of each iteration
}

constexpr std::string_view usage =
    "usage: async_echo [--clients N] [--messages N] [--seconds N] [--threads N] [--pool-size N]\n"
    "  --clients N    client coroutines (1..100000, default 200)\n"
    "  --messages N   round trips per client (1..1000000, default 50)\n"
    "  --seconds N    run for N seconds instead (0..3600, default 0: use --messages)\n"
    "  --threads N    threads running the io_context (1..64, default 2)\n"
    "  --pool-size N  the pool's max_size (1..1000, default 8)\n";

bool parse_number(std::string_view text, int min, int max, int& out) {
  int value = 0;
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
    if (arg == "--clients") {
      ok = parse_number(value, 1, 100'000, s.clients);
    } else if (arg == "--messages") {
      ok = parse_number(value, 1, 1'000'000, s.messages);
    } else if (arg == "--seconds") {
      ok = parse_number(value, 0, 3600, s.seconds);
    } else if (arg == "--threads") {
      ok = parse_number(value, 1, 64, s.threads);
    } else if (arg == "--pool-size") {
      ok = parse_number(value, 1, 1000, s.pool_size);
    }
    if (!ok) {
      return std::nullopt;
    }
  }
  return s;
}

int run(const Settings& settings) {
  asio::io_context io(settings.threads);

  // The server's acceptor lives on a strand: shutdown() closes it from whichever thread ends
  // the last client, while the accept loop may be calling async_accept on another.
  const auto server_strand = asio::make_strand(io);
  tcp::acceptor acceptor(server_strand, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  const tcp::endpoint server = acceptor.local_endpoint();
  asio::co_spawn(server_strand, accept_loop(acceptor, io.get_executor()), asio::detached);

  // Declared after `io`, so destroyed before it: the sockets it holds need the io_context.
  // Waiting coroutines are resumed on the io_context's threads (ExecutorScheduler).
  Pool pool{EchoConnector{io.get_executor(), server},
            connpool::PoolOptions{.max_size = static_cast<std::size_t>(settings.pool_size),
                                  .acquire_timeout = 5s},
            connpool::asio::make_scheduler(io)};

  std::cout << "async_echo: echo server on " << server << "; " << settings.clients
            << " client coroutines on " << settings.threads << " threads, pool max_size "
            << settings.pool_size << ", ";
  if (settings.seconds > 0) {
    std::cout << settings.seconds << " seconds\n";
  } else {
    std::cout << settings.messages << " messages each\n";
  }

  Counters counters;
  FirstError first_error;
  // After the last client: stop accepting and close the pool, whose connections' close() makes
  // every echo_session see EOF. run() then runs out of work and returns.
  const auto shutdown = [&] {
    asio::post(server_strand, [&acceptor] {
      asio::error_code ignored;
      acceptor.close(ignored);
    });
    pool.close();
  };

  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(settings.seconds);
  for (int id = 0; id < settings.clients; ++id) {
    asio::co_spawn(io, run_client(pool, id, settings, deadline, counters),
                   [&, id](const std::exception_ptr& e) {
                     if (e) {
                       try {
                         std::rethrow_exception(e);
                       } catch (const std::exception& ex) {
                         first_error.set("client " + std::to_string(id) + ": " + ex.what());
                       }
                     }
                     if (counters.finished.fetch_add(1) + 1 == settings.clients) {
                       shutdown();
                     }
                   });
  }

  std::vector<std::thread> threads;
  for (int i = 1; i < settings.threads; ++i) {
    threads.emplace_back([&io] { io.run(); });
  }
  io.run();
  for (std::thread& t : threads) {
    t.join();
  }
  const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;

  // Every client is done: every figure of this snapshot is exact.
  std::cout << pool.stats().to_json() << '\n';

  const std::uint64_t echoes = counters.echoes.load();
  const std::uint64_t mismatches = counters.mismatches.load();
  const std::uint64_t failures = counters.io_errors.load() + counters.timeouts.load();
  const std::string error = first_error.get();
  const bool complete =
      settings.seconds > 0 || echoes == static_cast<std::uint64_t>(settings.clients) *
                                            static_cast<std::uint64_t>(settings.messages);
  const bool ok = mismatches == 0 && failures == 0 && error.empty() && complete;
  std::cout << "async_echo: " << (ok ? "OK" : "FAILED") << ": " << echoes << " echoes in "
            << std::fixed << std::setprecision(2) << elapsed.count() << " s ("
            << static_cast<std::uint64_t>(static_cast<double>(echoes) / elapsed.count()) << "/s), "
            << mismatches << " mismatches, " << counters.io_errors.load() << " failed round trips, "
            << counters.timeouts.load() << " acquire timeouts\n";
  if (!error.empty()) {
    std::cerr << "async_echo: error: " << error << '\n';
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::optional<Settings> settings = parse_args(argc, argv);
  if (!settings) {
    std::cerr << usage;
    return 2;
  }
  try {
    return run(*settings);
  } catch (const std::exception& e) {
    std::cerr << "async_echo: " << e.what() << '\n';
    return 1;
  }
}

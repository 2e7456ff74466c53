// connpool - examples: HttpConnection, an HTTP/1.1 keep-alive socket ready for a connpool pool
// SPDX-License-Identifier: MIT
#pragma once

// A client connection to an HTTP/1.1 server over a plain POSIX TCP socket (no HTTP library),
// kept open between requests (keep-alive). It is what connpool looks for: Closeable (closes the
// socket) and Pingable (a non-blocking peek: has the server closed the connection?). get() sends
// a GET and reads the response, its body framed by Content-Length or by chunked coding, which is
// what web servers such as nginx send. Used by examples/http_keepalive.cpp and the integration
// tests; copy it into your project and extend get() as you need (no TLS, no redirects).
// POSIX only; the connect timeout relies on Linux applying SO_SNDTIMEO to connect().

#include <array>
#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <unistd.h>

namespace connpool_examples {

/// A failed connect or request. The message names the server (host:port) and the cause.
class HttpError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A request on a reused connection failed before any byte of its response arrived, because
/// the server had closed the connection (end of stream or reset): the request reached no live
/// server, so an idempotent request (a GET) may be sent again on another connection.
///
/// Why it exists: a server closes an idle keep-alive connection when its keep-alive timeout
/// expires (nginx: keepalive_timeout), and the client learns it only when it next reads from
/// the socket. The pool's validation ping (HttpConnection::ping()) finds connections the server
/// closed while they sat idle, but the server may close one just after the ping, before the
/// request reaches it. Browsers and Go's net/http retry such requests in the same way.
/// A failure on a connection's first request, or once a byte of the response has arrived, is a
/// plain HttpError: the server may have acted on the request.
class StaleConnection : public HttpError {
 public:
  using HttpError::HttpError;
};

/// A complete response.
struct Response {
  int status = 0;           ///< the status code: 200, 404, ...
  std::string body;         ///< the body, decoded from chunked coding if it was sent so
  bool keep_alive = false;  ///< false when the server said it closes the connection
};

/// One HTTP/1.1 connection to host:port: the `Conn` of a pool.
///
/// The connection is reusable as long as every response was read completely and the server
/// keeps the connection open. After a "Connection: close" (nginx sends one with the
/// keepalive_requests-th response of a connection), an I/O error, a timeout or a response it
/// cannot read, it is not reusable any more: get() throws HttpError, and ping() returns false,
/// so the pool closes it instead of handing it out. A caller who saw get() throw should
/// invalidate() its handle all the same, which closes the connection at once.
///
/// No read waits longer than timeout_seconds for the server (SO_RCVTIMEO), so nothing hangs.
/// Thread safety: one thread at a time, which is what a PooledHandle guarantees.
/// Move-only; a moved-from connection is closed.
class HttpConnection {
 public:
  /// How long connect() and each send or receive may wait, in seconds.
  static constexpr int timeout_seconds = 5;

  /// Connects to host:port (a name, or an IPv4 or IPv6 address), trying each address the name
  /// resolves to. Throws: HttpError naming host:port and the cause.
  static HttpConnection connect(const std::string& host, int port) {
    const std::string where = host + ":" + std::to_string(port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) {
      throw HttpError("http: cannot resolve " + where + ": " + ::gai_strerror(rc));
    }
    const std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(found, &::freeaddrinfo);
    int error = EADDRNOTAVAIL;
    for (const addrinfo* a = found; a != nullptr; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        error = errno;
        continue;
      }
      // Set before connect(): on Linux the send timeout also bounds connect(), which then
      // fails with EINPROGRESS.
      const timeval timeout{timeout_seconds, 0};
      if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout) == 0 &&
          ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) == 0 &&
          ::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
        return HttpConnection(fd, host, port);
      }
      error = errno == EINPROGRESS ? ETIMEDOUT : errno;
      ::close(fd);
    }
    throw HttpError("http: connect to " + where + " failed: " + message(error));
  }

  HttpConnection(HttpConnection&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)),
        host_(std::move(other.host_)),
        port_(other.port_),
        authority_(std::move(other.authority_)),
        buffer_(std::move(other.buffer_)),
        responses_(other.responses_),
        reusable_(std::exchange(other.reusable_, false)),
        received_any_(other.received_any_) {}
  HttpConnection& operator=(HttpConnection&& other) noexcept {
    if (this != &other) {
      close();
      fd_ = std::exchange(other.fd_, -1);
      host_ = std::move(other.host_);
      port_ = other.port_;
      authority_ = std::move(other.authority_);
      buffer_ = std::move(other.buffer_);
      responses_ = other.responses_;
      reusable_ = std::exchange(other.reusable_, false);
      received_any_ = other.received_any_;
    }
    return *this;
  }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;
  ~HttpConnection() { close(); }

  /// Closeable: closes the socket. Idempotent.
  void close() noexcept {
    if (fd_ >= 0) {
      ::close(std::exchange(fd_, -1));
    }
    reusable_ = false;
  }

  /// Pingable: whether the connection can carry another request, without a round trip.
  ///
  /// Returns false when the connection is not reusable (see the class comment), else peeks at
  /// the socket without blocking: nothing to read (EAGAIN) means alive, true; end of stream
  /// means the server closed the connection, false; bytes waiting mean the server sent
  /// something nobody asked for, the stream is out of step, false; any other error, false.
  /// Why: HTTP has no ping, and a keep-alive connection the server has closed would otherwise
  /// be found only when the next request on it fails. The pool calls this before handing out
  /// an idle connection (PoolOptions::validate_on_acquire).
  bool ping() noexcept {
    if (fd_ < 0 || !reusable_) {
      return false;
    }
    char byte = 0;
    for (;;) {
      const ssize_t n = ::recv(fd_, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) {
        continue;
      }
      if (n < 0) {
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      return false;  // 0: the server closed the connection; > 0: unsolicited bytes
    }
  }

  /// Sends `GET <path> HTTP/1.1` (with Host and Connection: keep-alive) and reads the whole
  /// response. A 404 or a 500 is a response like any other: the connection stays reusable.
  ///
  /// Throws: std::invalid_argument when `path` does not start with '/' or contains a space or
  /// a control character (nothing is sent, the connection is unchanged); StaleConnection, see
  /// there; HttpError when the connection is not reusable, on an I/O error, when the server
  /// sends nothing for timeout_seconds, and on a response it cannot read (one without
  /// Content-Length or chunked coding is read only up to a "Connection: close"). After any of
  /// these the connection is not reusable.
  Response get(const std::string& path) {
    check_path(path);
    if (fd_ < 0 || !reusable_) {
      throw HttpError("http: " + where() + ": the connection is not reusable");
    }
    reusable_ = false;  // until the whole response has been read
    received_any_ = false;
    send_all("GET " + path + " HTTP/1.1\r\nHost: " + authority_ +
             "\r\nConnection: keep-alive\r\n\r\n");
    Response response = read_response();
    ++responses_;
    // Bytes after the response were never asked for: the stream is out of step.
    reusable_ = response.keep_alive && buffer_.empty();
    return response;
  }

  /// Whether the connection can carry another request (as far as known without reading).
  [[nodiscard]] bool reusable() const noexcept { return fd_ >= 0 && reusable_; }

  /// The number of complete responses read on this connection.
  [[nodiscard]] std::uint64_t responses() const noexcept { return responses_; }

  /// The socket's file descriptor, -1 once closed. For inspection: reading from or writing to
  /// it puts the connection out of step.
  [[nodiscard]] int native_handle() const noexcept { return fd_; }

 private:
  /// A parsed status line and header block.
  struct Head {
    int status = 0;
    bool keep_alive = false;
    bool chunked = false;
    std::optional<std::size_t> content_length;  // ignored when a Transfer-Encoding is present
  };

  static constexpr std::size_t max_line = 64 * 1024;         // a header block, a chunk-size line
  static constexpr std::size_t max_body = 64 * 1024 * 1024;  // a response body

  HttpConnection(int fd, const std::string& host, int port)
      : fd_(fd),
        host_(host),
        port_(port),
        authority_((host.find(':') != std::string::npos ? "[" + host + "]" : host) +
                   (port == 80 ? "" : ":" + std::to_string(port))),
        reusable_(true) {}

  static std::string message(int error) { return std::generic_category().message(error); }

  std::string where() const { return host_ + ":" + std::to_string(port_); }

  static void check_path(const std::string& path) {
    bool ok = !path.empty() && path.front() == '/';
    for (const char c : path) {
      ok = ok && static_cast<unsigned char>(c) > 0x20 && c != 0x7f;
    }
    if (!ok) {
      throw std::invalid_argument("http: not a valid request path: \"" + path + "\"");
    }
  }

  /// The connection broke. Throws StaleConnection when that happened on a reused connection
  /// before any byte of the response arrived, else HttpError.
  [[noreturn]] void lost(const std::string& what) const {
    if (responses_ > 0 && !received_any_) {
      throw StaleConnection("http: " + where() + ": " + what +
                            " before answering (the server had closed the connection)");
    }
    throw HttpError("http: " + where() + ": " + what);
  }

  void send_all(const std::string& data) {
    std::size_t sent = 0;
    while (sent < data.size()) {
      // MSG_NOSIGNAL: on a connection the server has reset, send() fails with EPIPE instead of
      // killing the process with SIGPIPE.
      const ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
      if (n >= 0) {
        sent += static_cast<std::size_t>(n);
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        throw HttpError("http: " + where() + ": send timed out");
      } else if (errno == EPIPE || errno == ECONNRESET) {
        lost("send failed: " + message(errno));
      } else if (errno != EINTR) {
        throw HttpError("http: " + where() + ": send failed: " + message(errno));
      }
    }
  }

  /// Appends the bytes that arrive next to buffer_. Returns false at the end of the stream.
  bool receive() {
    std::array<char, 16 * 1024> chunk{};
    for (;;) {
      const ssize_t n = ::recv(fd_, chunk.data(), chunk.size(), 0);
      if (n > 0) {
        buffer_.append(chunk.data(), static_cast<std::size_t>(n));
        received_any_ = true;
        return true;
      }
      if (n == 0) {
        return false;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        throw HttpError("http: " + where() + ": no response within " +
                        std::to_string(timeout_seconds) + " s");
      }
      if (errno == ECONNRESET) {
        lost("connection reset");
      }
      if (errno != EINTR) {
        throw HttpError("http: " + where() + ": recv failed: " + message(errno));
      }
    }
  }

  /// Receives until buffer_ holds at least `size` bytes; the end of the stream is an error.
  void receive_until_size(std::size_t size) {
    while (buffer_.size() < size) {
      if (!receive()) {
        lost("the server closed the connection");
      }
    }
  }

  /// Receives until buffer_ holds `delimiter` at or after `from`; returns its position.
  std::size_t receive_until(std::string_view delimiter, std::size_t from) {
    for (;;) {
      if (const std::size_t at = buffer_.find(delimiter, from); at != std::string::npos) {
        return at;
      }
      if (buffer_.size() - from > max_line) {
        throw HttpError("http: " + where() + ": header block or chunk line too long");
      }
      if (!receive()) {
        lost("the server closed the connection");
      }
    }
  }

  [[noreturn]] void malformed(const std::string& what) const {
    throw HttpError("http: " + where() + ": malformed response: " + what);
  }

  Response read_response() {
    for (;;) {
      const std::size_t end = receive_until("\r\n\r\n", 0);
      const Head head = parse_head(std::string_view(buffer_).substr(0, end));
      std::size_t pos = end + 4;
      if (head.status < 200) {
        buffer_.erase(0, pos);  // an interim response (100 Continue): the real one follows
        continue;
      }
      Response response{head.status, {}, head.keep_alive};
      if (head.status == 204 || head.status == 304) {
        // never a body
      } else if (head.chunked) {
        pos = read_chunked(pos, response.body);
      } else if (head.content_length) {
        if (*head.content_length > max_body) {
          malformed("body too large");
        }
        receive_until_size(pos + *head.content_length);
        response.body.assign(buffer_, pos, *head.content_length);
        pos += *head.content_length;
      } else if (!head.keep_alive) {
        while (receive()) {  // the body ends where the server closes the connection
          if (buffer_.size() - pos > max_body) {
            malformed("body too large");
          }
        }
        response.body.assign(buffer_, pos);
        pos = buffer_.size();
      } else {
        malformed("neither Content-Length nor chunked coding on a kept-alive connection");
      }
      buffer_.erase(0, pos);
      return response;
    }
  }

  /// Decodes the chunked body that starts at buffer_[pos] into `body`; returns the position
  /// after it (after the trailer section).
  std::size_t read_chunked(std::size_t pos, std::string& body) {
    for (;;) {
      const std::size_t eol = receive_until("\r\n", pos);
      std::string_view line = std::string_view(buffer_).substr(pos, eol - pos);
      line = trim(line.substr(0, line.find(';')));  // chunk extensions are ignored
      std::size_t size = 0;
      const auto [end, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
      if (line.empty() || ec != std::errc{} || end != line.data() + line.size()) {
        malformed("bad chunk size");
      }
      pos = eol + 2;
      if (size == 0) {
        for (;;) {  // trailer fields, if any, up to an empty line
          const std::size_t next = receive_until("\r\n", pos);
          const bool last = next == pos;
          pos = next + 2;
          if (last) {
            return pos;
          }
        }
      }
      if (size > max_body - body.size()) {
        malformed("body too large");
      }
      receive_until_size(pos + size + 2);
      if (buffer_.compare(pos + size, 2, "\r\n") != 0) {
        malformed("chunk not followed by CRLF");
      }
      body.append(buffer_, pos, size);
      pos += size + 2;
    }
  }

  Head parse_head(std::string_view block) const {
    std::size_t eol = block.find("\r\n");
    const std::string_view status_line = block.substr(0, eol);
    // "HTTP/1.1 200 OK": HTTP/1.0 or 1.1, a space, three digits, then a space and a reason
    // (optional).
    int status = 0;
    if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
        (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ' ||
        (status_line.size() > 12 && status_line[12] != ' ') ||
        std::from_chars(status_line.data() + 9, status_line.data() + 12, status).ptr !=
            status_line.data() + 12 ||
        status < 100 || status > 599) {
      malformed("bad status line \"" + std::string(status_line) + "\"");
    }
    Head head;
    head.status = status;
    bool close = false;
    bool keep_alive = false;
    bool transfer_encoding = false;
    while (eol != std::string_view::npos) {
      const std::size_t start = eol + 2;
      eol = block.find("\r\n", start);
      const std::string_view line = block.substr(start, eol - start);
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos) {
        malformed("bad header line \"" + std::string(line) + "\"");
      }
      const std::string name = lower(line.substr(0, colon));
      const std::string value = lower(trim(line.substr(colon + 1)));
      if (name == "content-length") {
        std::size_t length = 0;
        const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
        if (value.empty() || ec != std::errc{} || end != value.data() + value.size()) {
          malformed("bad Content-Length \"" + value + "\"");
        }
        head.content_length = length;
      } else if (name == "transfer-encoding") {
        // The body is chunked when chunked is the last coding applied; other codings are not
        // decoded (that body is then read to the end of the connection).
        transfer_encoding = true;
        const std::size_t comma = value.rfind(',');
        const std::string_view last = comma == std::string::npos
                                          ? std::string_view(value)
                                          : std::string_view(value).substr(comma + 1);
        head.chunked = trim(last) == "chunked";
      } else if (name == "connection") {
        for (std::string_view rest = value; !rest.empty();) {
          const std::size_t comma = rest.find(',');
          const std::string_view token = trim(rest.substr(0, comma));
          close = close || token == "close";
          keep_alive = keep_alive || token == "keep-alive";
          rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
        }
      }
    }
    if (transfer_encoding) {
      head.content_length.reset();  // RFC 9112: Transfer-Encoding overrides Content-Length
    }
    // HTTP/1.1 keeps the connection unless told otherwise; HTTP/1.0 only when told so.
    head.keep_alive = !close && (status_line[7] != '0' || keep_alive);
    return head;
  }

  static std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
      s.remove_prefix(1);
    }
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
      s.remove_suffix(1);
    }
    return s;
  }

  static std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
      if (c >= 'A' && c <= 'Z') {
        c = static_cast<char>(c - 'A' + 'a');
      }
    }
    return out;
  }

  int fd_ = -1;
  std::string host_;
  int port_ = 0;
  std::string authority_;  // the Host header's value
  std::string buffer_;     // received, not yet consumed (empty between responses)
  std::uint64_t responses_ = 0;
  bool reusable_ = false;      // see reusable()
  bool received_any_ = false;  // a byte of the current response has arrived
};

}  // namespace connpool_examples

// connpool - examples: RedisConnection, a hiredis connection ready for a connpool pool
// SPDX-License-Identifier: MIT
#pragma once

// A small RAII wrapper over hiredis' redisContext (Debian's libhiredis-dev) that is what connpool
// looks for: Closeable (redisFree), Pingable (PING answers PONG) and Resettable (a borrower that
// switched database with SELECT gets the default database 0 back, so the next borrower does not
// write into the wrong one). Used by examples/redis.cpp and the integration tests.

#include <cctype>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <hiredis/hiredis.h>

namespace connpool_examples {

class RedisError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RedisConnection {
 public:
  /// Connects to host:port with a timeout. Throws RedisError.
  static RedisConnection connect(const std::string& host, int port) {
    const timeval timeout{2, 0};
    redisContext* c = redisConnectWithTimeout(host.c_str(), port, timeout);
    if (c == nullptr) {
      throw RedisError("redis: out of memory");
    }
    if (c->err != 0) {
      std::string message =
          "redis: connect to " + host + ":" + std::to_string(port) + " failed: " + c->errstr;
      redisFree(c);
      throw RedisError(message);
    }
    redisSetTimeout(c, timeout);
    return RedisConnection(c);
  }

  RedisConnection(RedisConnection&& other) noexcept
      : ctx_(std::exchange(other.ctx_, nullptr)), db_(other.db_) {}
  RedisConnection& operator=(RedisConnection&& other) noexcept {
    if (this != &other) {
      close();
      ctx_ = std::exchange(other.ctx_, nullptr);
      db_ = other.db_;
    }
    return *this;
  }
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;
  ~RedisConnection() { close(); }

  /// Closeable.
  void close() noexcept {
    if (ctx_ != nullptr) {
      redisFree(std::exchange(ctx_, nullptr));
    }
  }

  /// Pingable: PING answers PONG (a connection the server closed fails here).
  bool ping() {
    try {
      return command({"PING"}) == "PONG";
    } catch (const RedisError&) {
      return false;
    }
  }

  /// Resettable: back to database 0 if the borrower selected another one. Throws if the
  /// connection is broken, and the pool then closes it.
  void reset() {
    if (ctx_ == nullptr || ctx_->err != 0) {
      throw RedisError("redis: connection lost");
    }
    if (db_ != 0) {
      command({"SELECT", "0"});
    }
  }

  /// Sends one command (its arguments as strings) and returns the reply as a string: a status
  /// or bulk string, an integer in decimal, "" for nil; an array is not expected here.
  std::string command(const std::vector<std::string>& args) {
    if (ctx_ == nullptr || ctx_->err != 0) {
      throw RedisError("redis: connection lost");
    }
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const std::string& a : args) {
      argv.push_back(a.data());
      lengths.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(ctx_, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    if (reply == nullptr) {
      throw RedisError(std::string("redis: ") + (ctx_->err != 0 ? ctx_->errstr : "no reply"));
    }
    std::string out;
    const int type = reply->type;
    if (type == REDIS_REPLY_STRING || type == REDIS_REPLY_STATUS || type == REDIS_REPLY_ERROR) {
      out.assign(reply->str, reply->len);
    } else if (type == REDIS_REPLY_INTEGER) {
      out = std::to_string(reply->integer);
    }
    freeReplyObject(reply);
    if (type == REDIS_REPLY_ERROR) {
      throw RedisError("redis: " + out);
    }
    if (!args.empty() && upper(args[0]) == "SELECT" && args.size() > 1) {
      db_ = std::stoi(args[1]);  // remembered for reset()
    }
    return out;
  }

 private:
  explicit RedisConnection(redisContext* c) noexcept : ctx_(c) {}

  static std::string upper(std::string s) {
    for (char& ch : s) {
      ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    }
    return s;
  }

  redisContext* ctx_ = nullptr;
  int db_ = 0;  // the database selected now
};

}  // namespace connpool_examples

// connpool - examples: PgConnection, a libpq connection ready for a connpool pool
// SPDX-License-Identifier: MIT
#pragma once

// A small RAII wrapper over libpq's PGconn (Debian's libpq-dev) that is what connpool looks
// for: Closeable (PQfinish), Pingable (the connection is OK and `SELECT 1` round-trips),
// Resettable (rolls back a transaction left open and discards the session's state with DISCARD
// ALL, so the next borrower starts clean; SessionReset::rollback_only skips the DISCARD ALL and
// its round trip) and BrokenCheckable (PQstatus, no I/O). connect() takes a connpool::Deadline
// (a non-blocking PQconnectStartParams polled until it), and PgConnection::classify() is an
// on_error that maps SQLSTATEs to what the pool should do. Used by examples/postgres.cpp, the
// integration tests and bench/pg_bench.cpp; copy it into your project and extend query() as you
// need.

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <connpool/deadline.hpp>
#include <connpool/options.hpp>

#include <libpq-fe.h>
#include <poll.h>

namespace connpool_examples {

/// An error reported by libpq or the server, with its message and, when the server sent one,
/// its SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html).
class PgError : public std::runtime_error {
 public:
  explicit PgError(const std::string& message, std::string sqlstate = {})
      : std::runtime_error(message), sqlstate_(std::move(sqlstate)) {}
  /// Five characters, e.g. "08006" or "57P01"; empty when the error did not come from the
  /// server (out of memory, a connect that timed out).
  [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

 private:
  std::string sqlstate_;
};

/// What PgConnection::reset() does when the connection goes back to its pool.
enum class SessionReset {
  /// Roll back a transaction left open, then DISCARD ALL: the next borrower starts with a fresh
  /// session whatever this one did. Costs a round trip per release, and as much server work as
  /// a trivial query (with `SELECT 1` requests it halves the throughput, bench/README.md).
  discard_all,
  /// Only roll back a transaction left open; nothing is sent when none is (libpq tracks the
  /// transaction status locally). For code that never changes session state (SET, temporary
  /// tables, named prepared statements, advisory locks): what HikariCP does, which restores
  /// only the JDBC-level settings a borrower changed and never discards the session.
  rollback_only,
};

class PgConnection {
 public:
  /// Opens a connection whose reset() does what `reset` says. Throws PgError with libpq's
  /// message when it fails.
  static PgConnection connect(const std::string& conninfo,
                              SessionReset reset = SessionReset::discard_all) {
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (c == nullptr) {
      throw PgError("postgres: out of memory");
    }
    if (PQstatus(c) != CONNECTION_OK) {
      std::string message = "postgres: connect failed: " + std::string(PQerrorMessage(c));
      PQfinish(c);
      throw PgError(trim(std::move(message)), "08001");
    }
    return PgConnection(c, reset);
  }

  /// As above, giving up at `deadline` (PoolOptions::connect_timeout) or when the pool closes:
  /// a non-blocking connect (PQconnectStartParams) whose socket is polled in slices of at most
  /// 50 ms, so that the pool's stop request is seen promptly too. Use it as a factory that
  /// takes the Deadline:
  ///     connpool::ConnectionPool pool{[info](const connpool::Deadline& d) {
  ///       return PgConnection::connect(info, SessionReset::discard_all, d);
  ///     }, connpool::PoolOptions{.connect_timeout = 2s}};
  /// Throws PgError ("08001" when the server refused, "timed out" past the deadline).
  static PgConnection connect(const std::string& conninfo,
                              SessionReset reset,
                              const connpool::Deadline& deadline) {
    // The conninfo string is expanded as the "dbname" keyword (expand_dbname = 1).
    const char* const keywords[] = {"dbname", nullptr};
    const char* const values[] = {conninfo.c_str(), nullptr};
    PGconn* c = PQconnectStartParams(keywords, values, 1);
    if (c == nullptr) {
      throw PgError("postgres: out of memory");
    }
    PgConnection guard(c, reset);  // PQfinish on every way out
    if (PQstatus(c) == CONNECTION_BAD) {
      throw PgError(trim("postgres: connect failed: " + std::string(PQerrorMessage(c))), "08001");
    }
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    for (;;) {
      if (state == PGRES_POLLING_OK) {
        return guard;
      }
      if (state == PGRES_POLLING_FAILED) {
        throw PgError(trim("postgres: connect failed: " + std::string(PQerrorMessage(c))), "08001");
      }
      if (deadline.expired()) {
        throw PgError(deadline.stop.stop_requested()
                          ? "postgres: connect abandoned: the pool is closing"
                          : "postgres: connect timed out (connect_timeout)");
      }
      const auto slice = std::min<std::chrono::steady_clock::duration>(
          deadline.remaining(), std::chrono::milliseconds(50));
      pollfd p{PQsocket(c), static_cast<short>(state == PGRES_POLLING_READING ? POLLIN : POLLOUT),
               0};
      const int ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(slice).count());
      if (::poll(&p, 1, ms) > 0) {
        state = PQconnectPoll(c);
      }
    }
  }

  /// An on_error for PoolOptions (see PooledHandle::fail()): a connection exception (SQLSTATE
  /// class 08), an administrator's shutdown (57P01, pg_terminate_backend) or an error without
  /// a SQLSTATE on a connection libpq reports lost are evict; a read-only transaction (25006:
  /// the server this pool reaches was demoted, a failover happened) is clear; other server
  /// errors (a constraint violation, a syntax error) leave the connection usable: keep. An
  /// exception that is not a PgError: evict.
  static connpool::ErrorAction classify(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const PgError& e) {
      const std::string& state = e.sqlstate();
      if (state == "25006") {
        return connpool::ErrorAction::clear;
      }
      if (state.empty() || state.rfind("08", 0) == 0 || state == "57P01") {
        return connpool::ErrorAction::evict;
      }
      return connpool::ErrorAction::keep;
    } catch (...) {
      return connpool::ErrorAction::evict;
    }
  }

  PgConnection(PgConnection&& other) noexcept
      : conn_(std::exchange(other.conn_, nullptr)), reset_(other.reset_) {}
  PgConnection& operator=(PgConnection&& other) noexcept {
    if (this != &other) {
      close();
      conn_ = std::exchange(other.conn_, nullptr);
      reset_ = other.reset_;
    }
    return *this;
  }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;
  ~PgConnection() { close(); }

  /// Closeable: ends the session.
  void close() noexcept {
    if (conn_ != nullptr) {
      PQfinish(std::exchange(conn_, nullptr));
    }
  }

  /// BrokenCheckable: libpq saw the connection fail (no I/O: its own status).
  [[nodiscard]] bool is_broken() const noexcept {
    return conn_ == nullptr || PQstatus(conn_) == CONNECTION_BAD;
  }

  /// Pingable: the connection is up and a trivial query round-trips.
  bool ping() {
    if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK) {
      return false;
    }
    PGresult* r = PQexec(conn_, "SELECT 1");
    const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
  }

  /// Resettable: rolls back a transaction the borrower left open, then, with
  /// SessionReset::discard_all (the default), DISCARD ALL (temporary tables, SET parameters
  /// including search_path and role, prepared statements, advisory locks). Throws if the
  /// connection is broken, and the pool then closes it.
  void reset() {
    const PGTransactionStatusType t = PQtransactionStatus(conn_);
    if (t == PQTRANS_UNKNOWN || PQstatus(conn_) != CONNECTION_OK) {
      throw PgError("postgres: connection lost");
    }
    if (t != PQTRANS_IDLE) {
      command("ROLLBACK");
    }
    if (reset_ == SessionReset::discard_all) {
      command("DISCARD ALL");
    }
  }

  /// Runs `sql` with text parameters $1, $2, ...; returns the rows as text (NULL as "").
  std::vector<std::vector<std::string>> query(const std::string& sql,
                                              const std::vector<std::string>& params = {}) {
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const std::string& p : params) {
      values.push_back(p.c_str());
    }
    PGresult* r = PQexecParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr,
                               values.data(), nullptr, nullptr, 0);
    const ExecStatusType status = PQresultStatus(r);
    if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) {
      throw_result_error(r);
    }
    std::vector<std::vector<std::string>> rows(static_cast<std::size_t>(PQntuples(r)));
    for (int i = 0; i < PQntuples(r); ++i) {
      for (int j = 0; j < PQnfields(r); ++j) {
        rows[static_cast<std::size_t>(i)].emplace_back(PQgetvalue(r, i, j));
      }
    }
    PQclear(r);
    return rows;
  }

  /// The first column of the first row.
  std::string scalar(const std::string& sql, const std::vector<std::string>& params = {}) {
    const auto rows = query(sql, params);
    if (rows.empty() || rows.front().empty()) {
      throw PgError("postgres: no value from: " + sql);
    }
    return rows.front().front();
  }

  /// A statement without results (several may be separated by ';').
  void command(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType status = PQresultStatus(r);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      throw_result_error(r);
    }
    PQclear(r);
  }

  [[nodiscard]] PGconn* native() const noexcept { return conn_; }

 private:
  PgConnection(PGconn* c, SessionReset reset) noexcept : conn_(c), reset_(reset) {}

  /// Throws the error of result `r` (and frees it), with its SQLSTATE; a failure on the client's
  /// side (no result, or none sent by the server) on a lost connection is "08006".
  [[noreturn]] void throw_result_error(PGresult* r) const {
    std::string message =
        "postgres: " + std::string(r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(conn_));
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string sqlstate = state != nullptr ? state : "";
    if (sqlstate.empty() && is_broken()) {
      sqlstate = "08006";  // connection_failure
    }
    PQclear(r);
    throw PgError(trim(std::move(message)), std::move(sqlstate));
  }

  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
      s.pop_back();
    }
    return s;
  }

  PGconn* conn_ = nullptr;
  SessionReset reset_ = SessionReset::discard_all;
};

}  // namespace connpool_examples

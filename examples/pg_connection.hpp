// connpool - examples: PgConnection, a libpq connection ready for a connpool pool
// SPDX-License-Identifier: MIT
#pragma once

// A small RAII wrapper over libpq's PGconn (Debian's libpq-dev) that is what connpool looks
// for: Closeable (PQfinish), Pingable (the connection is OK and `SELECT 1` round-trips) and
// Resettable (rolls back a transaction left open and discards the session's state with DISCARD
// ALL, so the next borrower starts clean; SessionReset::rollback_only skips the DISCARD ALL and
// its round trip). Used by examples/postgres.cpp, the integration tests and bench/pg_bench.cpp;
// copy it into your project and extend query() as you need.

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <libpq-fe.h>

namespace connpool_examples {

/// An error reported by libpq or the server, with its message.
class PgError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
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
      throw PgError(trim(std::move(message)));
    }
    return PgConnection(c, reset);
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
      std::string message = "postgres: " + std::string(PQresultErrorMessage(r));
      PQclear(r);
      throw PgError(trim(std::move(message)));
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
      std::string message = "postgres: " + std::string(PQresultErrorMessage(r));
      PQclear(r);
      throw PgError(trim(std::move(message)));
    }
    PQclear(r);
  }

  [[nodiscard]] PGconn* native() const noexcept { return conn_; }

 private:
  PgConnection(PGconn* c, SessionReset reset) noexcept : conn_(c), reset_(reset) {}

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

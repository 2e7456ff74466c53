// connpool - the storage of one pooled connection, and the link a handle keeps to its pool
// SPDX-License-Identifier: MIT
#pragma once

// SlotBase<Conn> holds a connection; the pool derives its own slot type from it (adding its
// state, ages and list links, which depend on the pool's Clock). HandleOwner<Conn> is the interface
// through which a PooledHandle<Conn> gives its connection back without knowing the pool's Factory
// or Clock: that is what lets users name PooledHandle<Conn> in their own signatures.

#include <exception>
#include <optional>

#include <connpool/options.hpp>

namespace connpool::detail {

/// The place of one connection. The pool allocates a slot the first time it needs one and
/// reuses it for later connections (it frees slots only when it is destroyed), so a pointer to
/// a slot stays valid for the pool's whole life.
template <class Conn>
struct SlotBase {
  SlotBase() = default;
  SlotBase(const SlotBase&) = delete;
  SlotBase& operator=(const SlotBase&) = delete;
  ~SlotBase() = default;

  std::optional<Conn> conn;  // engaged while the slot holds a connection
};

/// What a handle calls to end its hold on a connection.
template <class Conn>
class HandleOwner {
 public:
  /// Return the connection to the pool (`close` false) or close it (`close` true). Never throws.
  virtual void give_back(SlotBase<Conn>* slot, bool close) noexcept = 0;

  /// Give the connection back with the error that happened on it: PoolOptions::on_error
  /// decides whether it is returned, closed, or closed with the whole pool cleared; returns
  /// that decision. Never throws.
  virtual ErrorAction fail(SlotBase<Conn>* slot, std::exception_ptr error) noexcept = 0;

  /// The handle has moved the connection out of `slot`: the pool forgets it and frees its place.
  virtual void forget(SlotBase<Conn>* slot) noexcept = 0;

 protected:
  HandleOwner() = default;
  HandleOwner(const HandleOwner&) = default;
  HandleOwner& operator=(const HandleOwner&) = default;
  ~HandleOwner() = default;
};

struct HandleAccess;

}  // namespace connpool::detail

// connpool - compile-fail: copying a PooledHandle
// SPDX-License-Identifier: MIT
//
// Must NOT compile: a PooledHandle is move-only (DESIGN: "Move-only RAII guard"), so two
// handles can never give back the same connection. Expected diagnostic: use of a deleted
// function (the copy constructor). Everything else in this file is valid.

#include <connpool/connpool.hpp>

namespace cf_copy_handle {

struct Conn {
  int id = 0;
};

connpool::PooledHandle<Conn> copy_of(const connpool::PooledHandle<Conn>& h) {
  return h;  // copy: deleted
}

}  // namespace cf_copy_handle

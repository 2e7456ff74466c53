// connpool - compile-fail: a Task<const int&> that co_returns a temporary
// SPDX-License-Identifier: MIT
//
// Must NOT compile: `co_return 42;` in a Task<const int&> would bind the result to a temporary
// that is gone when the awaiter reads it (a dangling reference; ASan: stack-use-after-return), as
// `const int& f() { return 42; }` would. Expected diagnostic: the call to the deleted
// return_value overload that rejects it. Everything else in this file is valid.

#include <connpool/connpool.hpp>

namespace cf_task_ref_to_temporary {

connpool::Task<const int&> answer() {
  co_return 42;  // a temporary: would dangle
}

}  // namespace cf_task_ref_to_temporary

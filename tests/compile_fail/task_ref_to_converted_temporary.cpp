// connpool - compile-fail: a Task<const std::string&> that co_returns a string literal
// SPDX-License-Identifier: MIT
//
// Must NOT compile: the literal is an lvalue, but binding a const std::string& to it makes a
// temporary std::string that is gone when the awaiter reads it (a dangling reference). Expected
// diagnostic: the call to the deleted return_value overload that rejects it. Everything else in
// this file is valid.

#include <string>

#include <connpool/connpool.hpp>

namespace cf_task_ref_to_converted_temporary {

connpool::Task<const std::string&> name() {
  co_return "literal";  // converted to a temporary std::string: would dangle
}

}  // namespace cf_task_ref_to_converted_temporary

// connpool - tests: the replaceable global operator new/delete, all of them, with one hook
// SPDX-License-Identifier: MIT
#pragma once

// Defines every replaceable global allocation function (plain, array, nothrow, aligned, aligned +
// nothrow) on std::malloc / std::aligned_alloc, and every replaceable deallocation function
// (those, and sized, and sized + aligned) on std::free, so that whatever form of new made a
// block, the matching delete frees it. Before taking memory, each operator new calls
// connpool_test::on_allocate(), which the binary that includes this header defines: it sees
// every allocation made through operator new on its thread, and returning false makes that one
// fail (std::bad_alloc, or nullptr from the nothrow forms). alloc_test.cpp counts allocations
// through it; fault_test.cpp fails the n-th.
//
// These are definitions, not declarations: a binary that includes this header must include it
// in exactly one translation unit (a second one fails to link), so it is a binary of its own.
// Not for ThreadSanitizer builds, whose runtime defines operator new itself.

#include <cstddef>
#include <cstdlib>
#include <new>

namespace connpool_test {

/// Defined by the including binary. Called once before each allocation through operator new, on
/// the allocating thread; false makes that allocation fail. It runs inside operator new, so it
/// must not allocate (plain thread_local scalars are safe: no dynamic initialisation).
bool on_allocate() noexcept;

namespace replace_new_detail {

/// nullptr when on_allocate() says no (or the heap is exhausted).
inline void* try_allocate(std::size_t size) noexcept {
  return on_allocate() ? std::malloc(size == 0 ? 1 : size) : nullptr;
}

/// std::aligned_alloc wants a size that is a multiple of the alignment: rounded up to one.
inline void* try_allocate(std::size_t size, std::align_val_t align) noexcept {
  if (!on_allocate()) {
    return nullptr;
  }
  const auto a = static_cast<std::size_t>(align);
  const std::size_t rounded = ((size == 0 ? 1 : size) + a - 1) / a * a;
  return std::aligned_alloc(a, rounded);
}

inline void* checked(void* p) {
  if (p == nullptr) {
    throw std::bad_alloc();
  }
  return p;
}

inline void* allocate(std::size_t size) {
  return checked(try_allocate(size));
}

inline void* allocate(std::size_t size, std::align_val_t align) {
  return checked(try_allocate(size, align));
}

}  // namespace replace_new_detail
}  // namespace connpool_test

// NOLINTBEGIN(misc-new-delete-overloads,misc-definitions-in-headers): the full replaceable set,
// on purpose, in the one translation unit that includes this header
void* operator new(std::size_t size) {
  return connpool_test::replace_new_detail::allocate(size);
}
void* operator new[](std::size_t size) {
  return connpool_test::replace_new_detail::allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return connpool_test::replace_new_detail::try_allocate(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return connpool_test::replace_new_detail::try_allocate(size);
}
void* operator new(std::size_t size, std::align_val_t align) {
  return connpool_test::replace_new_detail::allocate(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return connpool_test::replace_new_detail::allocate(size, align);
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return connpool_test::replace_new_detail::try_allocate(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  return connpool_test::replace_new_detail::try_allocate(size, align);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  std::free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  std::free(p);
}
// NOLINTEND(misc-new-delete-overloads,misc-definitions-in-headers)

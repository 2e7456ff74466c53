// connpool - an intrusive doubly-linked list
// SPDX-License-Identifier: MIT
#pragma once

// The pool's idle set (LIFO: push_front/pop_front) and waiter queue (FIFO: push_back/pop_front)
// are both this list. Nodes carry their own links, so no operation allocates, and removing a
// node from the middle (an expired idle connection, a waiter that timed out) is O(1).

#include <cstddef>

namespace connpool::detail {

/// Links embedded in a node type `T` (which derives from ListHook<T>).
template <class T>
struct ListHook {
  T* prev_node = nullptr;
  T* next_node = nullptr;
  bool linked = false;
};

/// A non-owning list of nodes that derive from ListHook<T>. Not thread-safe: the owner's mutex
/// guards it. Every operation is O(1) and noexcept.
template <class T>
class IntrusiveList {
 public:
  IntrusiveList() = default;
  IntrusiveList(const IntrusiveList&) = delete;
  IntrusiveList& operator=(const IntrusiveList&) = delete;
  ~IntrusiveList() = default;

  [[nodiscard]] bool empty() const noexcept { return head_ == nullptr; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] T* front() const noexcept { return head_; }
  [[nodiscard]] T* back() const noexcept { return tail_; }

  void push_front(T* n) noexcept {
    hook(n).prev_node = nullptr;
    hook(n).next_node = head_;
    if (head_ != nullptr) {
      hook(head_).prev_node = n;
    } else {
      tail_ = n;
    }
    head_ = n;
    hook(n).linked = true;
    ++size_;
  }

  void push_back(T* n) noexcept {
    hook(n).next_node = nullptr;
    hook(n).prev_node = tail_;
    if (tail_ != nullptr) {
      hook(tail_).next_node = n;
    } else {
      head_ = n;
    }
    tail_ = n;
    hook(n).linked = true;
    ++size_;
  }

  /// Links `n` right after `pos`, or at the front when `pos` is null.
  void insert_after(T* pos, T* n) noexcept {
    if (pos == nullptr) {
      push_front(n);
      return;
    }
    T* next = hook(pos).next_node;
    hook(n).prev_node = pos;
    hook(n).next_node = next;
    hook(pos).next_node = n;
    if (next != nullptr) {
      hook(next).prev_node = n;
    } else {
      tail_ = n;
    }
    hook(n).linked = true;
    ++size_;
  }

  /// Removes and returns the first node; the list must not be empty.
  T* pop_front() noexcept {
    T* n = head_;
    remove(n);
    return n;
  }

  /// Unlinks `n`, which must be in this list.
  void remove(T* n) noexcept {
    ListHook<T>& h = hook(n);
    if (h.prev_node != nullptr) {
      hook(h.prev_node).next_node = h.next_node;
    } else {
      head_ = h.next_node;
    }
    if (h.next_node != nullptr) {
      hook(h.next_node).prev_node = h.prev_node;
    } else {
      tail_ = h.prev_node;
    }
    h.prev_node = nullptr;
    h.next_node = nullptr;
    h.linked = false;
    --size_;
  }

  /// Whether `n` is linked into a list (this one, for every use in the pool).
  static bool is_linked(const T* n) noexcept { return static_cast<const ListHook<T>*>(n)->linked; }

  /// The node before `n`, for walking the list back to front.
  static T* prev(const T* n) noexcept { return static_cast<const ListHook<T>*>(n)->prev_node; }

  /// The node after `n`, for walking the list front to back.
  static T* next(const T* n) noexcept { return static_cast<const ListHook<T>*>(n)->next_node; }

 private:
  static ListHook<T>& hook(T* n) noexcept { return *static_cast<ListHook<T>*>(n); }

  T* head_ = nullptr;
  T* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace connpool::detail

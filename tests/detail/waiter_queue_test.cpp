// connpool - tests: detail/waiter_queue.hpp, FIFO order, the starvation rule and deadlines, with
// plain time points
// SPDX-License-Identifier: MIT

#include <chrono>

#include <connpool/detail/waiter_queue.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using connpool::detail::DeadlineNode;
using connpool::detail::ListHook;
using connpool::detail::WaitClock;
using connpool::detail::WaiterQueue;

namespace {

constexpr WaitClock::time_point at(std::chrono::milliseconds ms) {
  return WaitClock::time_point(std::chrono::duration_cast<WaitClock::duration>(ms));
}

/// The fields WaiterQueue reads of a waiter, and nothing else.
struct W : ListHook<W> {
  WaitClock::time_point since{};
  DeadlineNode<W> deadline;
};

}  // namespace

// DESIGN 4: "WaitPolicy::fifo is strict arrival order".
TEST_CASE("WaiterQueue: oldest first, and the lock-free count follows", "[detail][waiters]") {
  WaiterQueue<W> q(true, 1000us);
  W a;
  W b;
  W c;
  CHECK(q.may_barge());
  CHECK_FALSE(q.must_hand_off());
  q.push_back(&a);
  q.push_back(&b);
  q.push_back(&c);
  CHECK(q.count() == 3);
  CHECK_FALSE(q.may_barge());  // fifo: nobody overtakes a waiter
  CHECK(q.must_hand_off());    // a release goes to the oldest waiter
  q.remove(&b);                // b timed out
  CHECK_FALSE(WaiterQueue<W>::queued(&b));
  CHECK(q.pop_front() == &a);
  CHECK(q.pop_front() == &c);
  CHECK(q.empty());
  CHECK(q.count() == 0);
  CHECK(q.may_barge());
}

TEST_CASE("WaiterQueue: bounded_barging lets callers barge until the oldest waiter starves",
          "[detail][waiters]") {
  WaiterQueue<W> q(false, 1000us);
  W a;
  a.since = at(100ms);
  q.push_back(&a);
  q.update_starving(at(100ms));
  CHECK(q.may_barge());  // a waits, but not for long: a running caller may take a connection
  CHECK_FALSE(q.must_hand_off());
  q.update_starving(at(101ms));
  CHECK_FALSE(q.starving());  // exactly the bound is not past it
  q.update_starving(at(102ms));
  CHECK(q.starving());
  CHECK_FALSE(q.may_barge());
  CHECK(q.must_hand_off());
  CHECK(q.may_starve());
  // Served: nobody waits, so nobody starves, whatever the time.
  CHECK(q.pop_front() == &a);
  CHECK_FALSE(q.may_starve());
  q.update_starving(at(102ms));
  CHECK_FALSE(q.starving());
}

TEST_CASE(
    "WaiterQueue: every starving waiter is served directly, however many hand-offs are "
    "in flight",
    "[detail][waiters]") {
  // DESIGN 4: "no caller is overtaken for longer than the wait policy's bound". Granted waiters
  // that have not run yet do not suspend the bound for the ones behind them.
  WaiterQueue<W> q(false, 1000us);
  W a;
  W b;
  W c;
  W d;
  for (W* w : {&a, &b, &c}) {
    w->since = at(0ms);
    q.push_back(w);
  }
  d.since = at(9ms) + 500us;
  q.push_back(&d);
  for (W* expected : {&a, &b, &c}) {
    q.update_starving(at(10ms));
    REQUIRE(q.starving());
    CHECK_FALSE(q.may_barge());
    CHECK(q.must_hand_off());
    CHECK(q.pop_front() == expected);  // granted; still asleep, and that does not matter
  }
  q.update_starving(at(10ms));
  CHECK_FALSE(q.starving());  // d has waited 0.5 ms: running callers may overtake it again
  CHECK(q.may_starve());
  q.update_starving(at(10ms) + 600us);
  CHECK(q.starving());  // ... until its 1 ms have passed
}

TEST_CASE(
    "WaiterQueue: under fifo a caller spins before sleeping only while recent waits were "
    "short",
    "[detail][waiters]") {
  WaiterQueue<W> q(true, 1000us);
  CHECK(q.recent_wait() == 0ns);
  CHECK(q.should_spin(1ms));  // nothing known yet: spin
  for (int i = 0; i < 4; ++i) {
    q.record_wait(100us);
  }
  CHECK(q.should_spin(1ms));
  // Waits of several milliseconds (many callers per connection): the mean climbs past the
  // limit within a few waits, and callers go straight to sleep.
  int waits_to_stop = 0;
  while (q.should_spin(1ms)) {
    q.record_wait(5ms);
    ++waits_to_stop;
    REQUIRE(waits_to_stop < 20);
  }
  CHECK(waits_to_stop <= 4);
  CHECK(q.recent_wait() >= 1ms);
  CHECK(q.recent_wait() <= 5ms);
  // Short waits again: spinning resumes, and the mean follows them down.
  int waits_to_resume = 0;
  while (!q.should_spin(1ms)) {
    q.record_wait(10us);
    ++waits_to_resume;
    REQUIRE(waits_to_resume < 40);
  }
  CHECK(q.recent_wait() < 1ms);
}

TEST_CASE(
    "WaiterQueue: under bounded_barging a caller spins before sleeping while nobody starves, "
    "whatever the recent waits",
    "[detail][waiters]") {
  WaiterQueue<W> q(false, 1000us);
  for (int i = 0; i < 50; ++i) {
    q.record_wait(50ms);
  }
  REQUIRE(q.recent_wait() > 1ms);
  W a;
  a.since = at(0ms);
  q.push_back(&a);
  q.update_starving(at(0ms));
  CHECK(q.should_spin(1ms));  // spinning waiters compete for released connections
  q.update_starving(at(5ms));
  REQUIRE(q.starving());
  CHECK_FALSE(q.should_spin(1ms));  // releases go to the waiters in order, as under fifo
  q.pop_front();
  q.update_starving(at(5ms));
  CHECK(q.should_spin(1ms));
}

TEST_CASE("WaiterQueue: while paused nobody may barge and every release takes the slow path",
          "[detail][waiters][pause]") {
  for (const bool fifo : {true, false}) {
    INFO((fifo ? "fifo" : "bounded_barging"));
    WaiterQueue<W> q(fifo, 1000us);
    REQUIRE(q.may_barge());
    REQUIRE(q.count() == 0);
    q.set_paused(true);
    CHECK(q.paused());
    CHECK(q.paused_lock_free());
    CHECK_FALSE(q.may_barge());
    CHECK(q.must_hand_off());
    CHECK(q.count() != 0);  // publish() goes to its slow path (a drain is woken there)
    W a;
    a.since = at(0ms);
    q.push_back(&a);
    q.update_starving(at(0ms));  // a has not waited: still nobody may barge
    CHECK_FALSE(q.may_barge());
    CHECK(q.count() == WaiterQueue<W>::kPausedMark + 1);
    q.set_paused(false);
    CHECK_FALSE(q.paused_lock_free());
    CHECK(q.count() == 1);
    q.update_starving(at(0ms));
    CHECK(q.may_barge() == !fifo);  // fifo: a waits, so nobody overtakes it
    CHECK(q.pop_front() == &a);
    q.update_starving(at(0ms));
    CHECK(q.may_barge());
    CHECK(q.count() == 0);
  }
}

TEST_CASE("WaiterQueue: deadlines in order, expired ones first", "[detail][waiters]") {
  WaiterQueue<W> q(true, 1000us);
  W a;
  W b;
  W c;
  CHECK_FALSE(q.has_deadlines());
  CHECK(q.insert_deadline(a, at(30ms)));        // the earliest: the timer must wake
  CHECK_FALSE(q.insert_deadline(b, at(50ms)));  // later: the timer sleeps on
  CHECK(q.insert_deadline(c, at(10ms)));
  CHECK(q.next_deadline() == at(10ms));
  CHECK(q.pop_expired(at(9ms)) == nullptr);
  CHECK(q.pop_expired(at(30ms)) == &c);
  CHECK(q.pop_expired(at(30ms)) == &a);
  CHECK(q.pop_expired(at(30ms)) == nullptr);
  q.unlink_deadline(b);  // served before its deadline
  q.unlink_deadline(b);  // and again: no effect
  CHECK_FALSE(q.has_deadlines());
  // Equal deadlines keep their order of insertion.
  CHECK(q.insert_deadline(a, at(5ms)));
  CHECK_FALSE(q.insert_deadline(b, at(5ms)));
  CHECK(q.pop_expired(at(5ms)) == &a);
  CHECK(q.pop_expired(at(5ms)) == &b);
}

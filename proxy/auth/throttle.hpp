// Throttling of failed logins: counts failures per user and per client
// address in a sliding window; past the limit it admits attempts to be
// verified one at a time per user and per address, each after a growing
// delay, so that guessing in parallel gains nothing. No I/O, no clock: time is
// passed in.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tokengate::auth {

struct ThrottleSettings {
  // Failures tolerated per user and per address within `window` before
  // answers slow down (setting `max_failed_logins`; 0 turns throttling off).
  unsigned max_failed_logins = 10;
  // "Within a minute" (issue 5). A failure counts for at least `window` and
  // at most `window` plus one twelfth of it (see kSlots in throttle.cpp).
  std::chrono::milliseconds window{std::chrono::seconds(60)};
  // The wait before answering the first failure over the limit. One second
  // caps an online guesser at about one answer per second per connection,
  // which a person who mistyped barely notices; PostgreSQL's auth_delay
  // module is typically set to the same order (its documented example is
  // 500 ms, applied to every failure).
  std::chrono::milliseconds base_delay{std::chrono::seconds(1)};
  // Doubling stops here. 30 s is the default auth phase timeout: waiting
  // longer would only let the timeout answer instead.
  std::chrono::milliseconds max_delay{std::chrono::seconds(30)};
  // Bounds memory: each failure touches three keys (user, address, and the
  // pair), each about 200 bytes with the map's overhead, so the default
  // holds under 16 MiB however many addresses an attacker has.
  std::size_t max_tracked_keys = 65536;
  // How long a successful login from an address vouches for that address
  // when its user is under attack from elsewhere (see admit()). A day covers
  // a daily job.
  std::chrono::milliseconds success_memory{std::chrono::hours(24)};
};

// Thread-safe (one mutex; it is called a few times per login).
//
// Intended use:
//   - before verifying an attempt, `admit(...)`: verify now, wait until the
//     given time and then verify, or refuse without verifying;
//   - on failure: `record_failure(...)`, then wait the delay it returns
//     (zero up to the limit) before answering;
//   - on success: `record_success(...)` and answer at once.
//
// Past the limit, admit() hands out one turn per key (the user, the address)
// every delay_for(failures): 1 s, then 2 s, 4 s… up to 30 s; each failure
// over the limit also puts the key's next turn that far from its own time. Attempts queue
// for their turn, and one whose turn would come after its own deadline is
// refused at once, unverified. A correct password in the middle of a guessing
// flood is therefore not accepted sooner than a wrong one would be answered,
// and a client that hangs up early learns nothing: nothing it sent was
// verified. Waiting ends when its turn comes, not when the flood stops.
//
// A user under attack from elsewhere: the user's turns do not apply to an
// address from which that user logged in successfully within
// success_memory, so a CI job keeps working while someone hammers its user
// name from other addresses (it still waits for its address's turns if its
// own address is over the limit).
//
// What a success forgives: the failures that the same user made from the
// same address (the person who mistyped, then got it right), in both the
// user's and the address's count. It does not forgive the user's failures
// from other addresses (an attacker's, who would otherwise get a fresh
// allowance each time a frequent CI job logs in), nor the address's failures
// for other users (a password sprayer who holds one valid account of their
// own). PgBouncer has no throttling and PostgreSQL only delays each failure,
// so this is the least surprising rule that a success cannot be used to
// launder an attacker's count.
//
class LoginThrottle {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  explicit LoginThrottle(ThrottleSettings settings = {});

  struct Admission {
    enum class Kind {
      now,     // verify at once
      wait,    // wait until `at`, then verify (the turn is reserved)
      refuse,  // no turn before the attempt's deadline: refuse, unverified
    };
    Kind kind = Kind::now;
    time_point at{};
  };
  // Before verifying an attempt of `user` from `address` that must be
  // answered by `deadline` (see the class comment).
  [[nodiscard]] Admission admit(std::string_view user, std::string_view address, time_point now,
                                time_point deadline);

  // Counts one failed login for `user` and for `address` (the client's IP
  // without the port; any stable text such as "[local]" for Unix sockets)
  // and returns delay_before_answer() including it.
  std::chrono::milliseconds record_failure(std::string_view user, std::string_view address,
                                           time_point now);

  // Forgives `user`'s failures from `address` (see above).
  void record_success(std::string_view user, std::string_view address, time_point now);

  // How long to wait before answering a failed attempt whose failure has
  // been recorded: zero while both the user's and the address's counts are
  // at most max_failed_logins; then base_delay for the first failure over
  // the limit, doubling for each further one, capped at max_delay.
  [[nodiscard]] std::chrono::milliseconds delay_before_answer(std::string_view user,
                                                              std::string_view address,
                                                              time_point now) const;

  struct FailureCounts {
    unsigned user = 0;
    unsigned address = 0;
  };
  // The failures currently counted (for log lines and tests).
  [[nodiscard]] FailureCounts failure_counts(std::string_view user, std::string_view address,
                                             time_point now) const;

  // Replaces the settings (SIGHUP) and forgets every count.
  void reconfigure(ThrottleSettings settings);

  // Number of keys held (at most settings.max_tracked_keys).
  [[nodiscard]] std::size_t tracked_keys() const;

 private:
  // The window is cut into kWindowSlots slots; a failure in slot s is
  // counted while the current slot is at most s + kWindowSlots, so it counts
  // for between `window` and `window + window / kWindowSlots`.
  static constexpr std::int64_t kWindowSlots = 12;
  static constexpr std::size_t kRingSlots = kWindowSlots + 1;

  // Failure counts of one key over the last kRingSlots slots: counts[s mod
  // kRingSlots] belongs to slot s for s in [latest - kWindowSlots, latest].
  struct Window {
    std::int64_t latest = 0;
    std::array<std::uint32_t, kRingSlots> counts{};
    time_point next_turn{};  // admit(): the next attempt past the limit is verified then
  };
  using Map = std::unordered_map<std::string, Window>;

  std::int64_t slot_of(time_point t) const;
  unsigned count_at(const std::string& key, std::int64_t slot) const;
  void add_failure(const std::string& key, std::int64_t slot);
  void make_room(std::int64_t slot);
  std::chrono::milliseconds delay_for(unsigned failures) const;

  bool vouched(const std::string& pair, time_point now) const;

  mutable std::mutex mutex_;
  ThrottleSettings settings_;
  std::chrono::milliseconds slot_length_;
  Map windows_;
  // (user, address) pairs with a successful login, and when.
  std::unordered_map<std::string, time_point> successes_;
};

}  // namespace tokengate::auth

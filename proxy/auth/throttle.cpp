// Sliding-window counts of failed logins per user and per address (see throttle.hpp).
#include "proxy/auth/throttle.hpp"

#include <algorithm>
#include <limits>
#include <tuple>
#include <vector>

namespace tokengate::auth {

namespace {

// Key parts are cut to this length: PostgreSQL role names are at most 63
// bytes (NAMEDATALEN - 1) and addresses at most an IPv6 text with a zone, so
// nothing real is cut, while a 10,000-byte startup `user` cannot make the
// table hold 10,000-byte keys.
constexpr std::size_t kMaxKeyPartBytes = 128;

std::string_view cut(std::string_view s) { return s.substr(0, kMaxKeyPartBytes); }

// Distinct prefixes keep a user named like an address apart from it; NUL
// cannot occur in either (both arrive NUL-terminated in the startup packet).
std::string user_key(std::string_view user) {
  std::string k("u", 2);  // "u\0"
  k += cut(user);
  return k;
}
std::string address_key(std::string_view address) {
  std::string k("a", 2);
  k += cut(address);
  return k;
}
std::string pair_key(std::string_view user, std::string_view address) {
  std::string k("p", 2);
  k += cut(address);
  k += '\0';
  k += cut(user);
  return k;
}

}  // namespace

LoginThrottle::LoginThrottle(ThrottleSettings settings) { reconfigure(settings); }

void LoginThrottle::reconfigure(ThrottleSettings settings) {
  std::lock_guard lock(mutex_);
  settings_ = settings;
  // Round up so that kWindowSlots slots cover at least the whole window.
  auto ms = std::max<std::int64_t>(settings_.window.count(), 1);
  slot_length_ = std::chrono::milliseconds((ms + kWindowSlots - 1) / kWindowSlots);
  windows_.clear();
  successes_.clear();
}

bool LoginThrottle::vouched(const std::string& pair, time_point now) const {
  auto it = successes_.find(pair);
  return it != successes_.end() && now - it->second <= settings_.success_memory;
}

LoginThrottle::Admission LoginThrottle::admit(std::string_view user, std::string_view address, time_point now,
                                              time_point deadline) {
  std::lock_guard lock(mutex_);
  const unsigned limit = settings_.max_failed_logins;
  if (limit == 0) return {};
  const auto slot = slot_of(now);
  struct Gate {
    Window* window;
    std::chrono::milliseconds delay;
  };
  std::vector<Gate> gates;
  auto consider = [&](const std::string& key) {
    const unsigned n = count_at(key, slot);
    if (n > limit) gates.push_back({&windows_.find(key)->second, delay_for(n)});
  };
  consider(address_key(address));
  if (!vouched(pair_key(user, address), now)) consider(user_key(user));
  if (gates.empty()) return {};
  time_point at = now;
  for (const auto& g : gates) at = std::max(at, g.window->next_turn);
  if (at > deadline) return {Admission::Kind::refuse, at};
  for (auto& g : gates) g.window->next_turn = at + g.delay;
  return {Admission::Kind::wait, at};
}

std::int64_t LoginThrottle::slot_of(time_point t) const {
  const std::int64_t ms = std::chrono::floor<std::chrono::milliseconds>(t.time_since_epoch()).count();
  const std::int64_t len = slot_length_.count();
  return ms / len - (ms % len != 0 && ms < 0 ? 1 : 0);  // floor, also before the clock's epoch
}

namespace {
std::size_t ring_index(std::int64_t slot, std::size_t ring) {
  auto r = static_cast<std::int64_t>(ring);
  return static_cast<std::size_t>(((slot % r) + r) % r);
}
}  // namespace

unsigned LoginThrottle::count_at(const std::string& key, std::int64_t slot) const {
  auto it = windows_.find(key);
  if (it == windows_.end()) return 0;
  const Window& w = it->second;
  std::uint64_t sum = 0;
  for (std::int64_t s = w.latest - kWindowSlots; s <= w.latest; ++s)
    if (s >= slot - kWindowSlots && s <= slot) sum += w.counts[ring_index(s, kRingSlots)];
  return static_cast<unsigned>(std::min<std::uint64_t>(sum, std::numeric_limits<unsigned>::max()));
}

void LoginThrottle::add_failure(const std::string& key, std::int64_t slot) {
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    make_room(slot);
    it = windows_.emplace(key, Window{slot, {}}).first;
  }
  Window& w = it->second;
  if (slot > w.latest) {
    // Clear the slots that fall out of the ring as it moves forward.
    for (std::int64_t s = w.latest + 1; s <= std::min(slot, w.latest + kWindowSlots + 1); ++s)
      w.counts[ring_index(s, kRingSlots)] = 0;
    w.latest = slot;
  } else if (slot < w.latest - kWindowSlots) {
    return;  // older than anything the ring holds (a caller's clock lagging)
  }
  auto& c = w.counts[ring_index(slot, kRingSlots)];
  if (c != std::numeric_limits<std::uint32_t>::max()) ++c;
}

// Called before a new key is inserted when the table is full: drops the
// expired windows, and if that frees less than an eighth of the table, the
// least recently failing keys that are not over the limit first (a quiet
// key costs little to forget; a throttled one is what the table is for).
// Each pass frees an eighth, so the cost is O(1) per insertion amortised.
void LoginThrottle::make_room(std::int64_t slot) {
  const std::size_t cap = std::max<std::size_t>(settings_.max_tracked_keys, 1);
  if (windows_.size() < cap) return;
  std::erase_if(windows_, [&](const auto& kv) { return kv.second.latest < slot - kWindowSlots; });
  const std::size_t target = cap - std::max<std::size_t>(cap / 8, 1);
  if (windows_.size() <= target) return;

  struct Candidate {
    bool over_limit;
    std::int64_t latest;
    Map::iterator it;
  };
  std::vector<Candidate> all;
  all.reserve(windows_.size());
  for (auto it = windows_.begin(); it != windows_.end(); ++it)
    all.push_back({count_at(it->first, slot) > settings_.max_failed_logins, it->second.latest, it});
  const std::size_t drop = windows_.size() - target;
  auto before = [](const Candidate& a, const Candidate& b) {
    return std::tie(a.over_limit, a.latest) < std::tie(b.over_limit, b.latest);
  };
  std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(drop - 1), all.end(), before);
  for (std::size_t i = 0; i < drop; ++i) windows_.erase(all[i].it);
}

std::chrono::milliseconds LoginThrottle::delay_for(unsigned failures) const {
  const unsigned limit = settings_.max_failed_logins;
  if (limit == 0 || failures <= limit || settings_.base_delay.count() <= 0)
    return std::chrono::milliseconds(0);
  auto delay = settings_.base_delay;
  for (unsigned extra = failures - limit - 1; extra > 0 && delay < settings_.max_delay; --extra)
    delay *= 2;
  return std::min(delay, settings_.max_delay);
}

std::chrono::milliseconds LoginThrottle::record_failure(std::string_view user, std::string_view address,
                                                        time_point now) {
  std::lock_guard lock(mutex_);
  if (settings_.max_failed_logins == 0) return std::chrono::milliseconds(0);
  const auto slot = slot_of(now);
  const auto u = user_key(user), a = address_key(address);
  add_failure(u, slot);
  add_failure(a, slot);
  add_failure(pair_key(user, address), slot);
  // A key over the limit admits its next attempt no sooner than its delay
  // from now: the attempt after this failure waits as this answer does.
  for (const auto* key : {&u, &a}) {
    auto it = windows_.find(*key);
    if (it == windows_.end()) continue;
    const auto delay = delay_for(count_at(*key, slot));
    if (delay.count() > 0) it->second.next_turn = std::max(it->second.next_turn, now + delay);
  }
  return delay_for(std::max(count_at(u, slot), count_at(a, slot)));
}

void LoginThrottle::record_success(std::string_view user, std::string_view address, time_point now) {
  std::lock_guard lock(mutex_);
  const auto pkey = pair_key(user, address);
  if (settings_.max_failed_logins != 0) {
    if (successes_.size() >= std::max<std::size_t>(settings_.max_tracked_keys, 1) && !successes_.contains(pkey)) {
      // Forget what no longer vouches; if that is not enough, everything
      // (a table full of fresh successes is not an attack on anybody).
      std::erase_if(successes_, [&](const auto& kv) { return now - kv.second > settings_.success_memory; });
      if (successes_.size() >= settings_.max_tracked_keys) successes_.clear();
    }
    successes_[pkey] = now;
  }
  auto pair = windows_.find(pkey);
  if (pair == windows_.end()) return;
  const Window forgiven = pair->second;
  windows_.erase(pair);
  // Slots are absolute: the pair's slots line up with the others' whatever the time.
  for (const auto& key : {user_key(user), address_key(address)}) {
    auto it = windows_.find(key);
    if (it == windows_.end()) continue;
    Window& w = it->second;
    for (std::int64_t s = forgiven.latest - kWindowSlots; s <= forgiven.latest; ++s) {
      if (s < w.latest - kWindowSlots || s > w.latest) continue;
      auto& c = w.counts[ring_index(s, kRingSlots)];
      c -= std::min(c, forgiven.counts[ring_index(s, kRingSlots)]);
    }
  }
}

std::chrono::milliseconds LoginThrottle::delay_before_answer(std::string_view user, std::string_view address,
                                                             time_point now) const {
  std::lock_guard lock(mutex_);
  const auto slot = slot_of(now);
  return delay_for(std::max(count_at(user_key(user), slot), count_at(address_key(address), slot)));
}

LoginThrottle::FailureCounts LoginThrottle::failure_counts(std::string_view user, std::string_view address,
                                                           time_point now) const {
  std::lock_guard lock(mutex_);
  const auto slot = slot_of(now);
  return {count_at(user_key(user), slot), count_at(address_key(address), slot)};
}

std::size_t LoginThrottle::tracked_keys() const {
  std::lock_guard lock(mutex_);
  return windows_.size();
}

}  // namespace tokengate::auth

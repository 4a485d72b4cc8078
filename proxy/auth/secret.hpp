// SecretString: a password or token held only as long as it is needed, whose
// bytes are zeroed when it is destroyed, reassigned or moved from.
#pragma once

#include <string.h>  // explicit_bzero

#include <string>
#include <string_view>
#include <utility>

namespace tokengate::auth {

// Zeroes a buffer in a way the compiler may not drop as a dead store.
inline void wipe(void* p, std::size_t n) noexcept {
  if (n != 0) ::explicit_bzero(p, n);
}
// Zeroes a string's whole buffer (not only its size: what it held before a
// shrink is there too) and empties it.
inline void wipe(std::string& s) noexcept {
  wipe(s.data(), s.capacity());
  s.clear();
}

// Move-only; never converts to std::string implicitly, so a copy that would
// outlive the wipe has to be written out (and is easy to find). Reading it is
// view(); the view dies with the SecretString.
class SecretString {
 public:
  SecretString() = default;
  // Copies `s`: the caller wipes its own copy (see take()).
  explicit SecretString(std::string_view s) {
    s_.reserve(s.size());  // one allocation, no stale copy left by growth
    s_.assign(s.data(), s.size());
  }
  // Copies `s` and wipes it.
  static SecretString take(std::string& s) {
    SecretString out(s);
    auth::wipe(s);
    return out;
  }
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&& other) noexcept : s_(std::move(other.s_)) { other.wipe(); }
  SecretString& operator=(SecretString&& other) noexcept {
    if (this != &other) {
      wipe();
      s_ = std::move(other.s_);
      other.wipe();
    }
    return *this;
  }
  ~SecretString() { wipe(); }

  [[nodiscard]] std::string_view view() const noexcept { return s_; }
  [[nodiscard]] bool empty() const noexcept { return s_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return s_.size(); }
  // A second secret with the same bytes.
  [[nodiscard]] SecretString copy() const { return SecretString(view()); }
  // Zeroes the bytes now; the string is empty afterwards.
  void wipe() noexcept { auth::wipe(s_); }

 private:
  std::string s_;
};

}  // namespace tokengate::auth

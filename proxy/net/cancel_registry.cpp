// Cancel key registry (see cancel_registry.hpp).
#include "proxy/net/cancel_registry.hpp"

#include <botan/system_rng.h>

namespace tokengate::net {

protocol::BackendKeyData CancelRegistry::issue() {
  std::lock_guard lock(mutex_);
  for (;;) {
    std::uint32_t raw[2];
    Botan::system_rng().randomize(reinterpret_cast<std::uint8_t*>(raw), sizeof raw);
    // Positive process ids, as PostgreSQL's are: some clients print them.
    protocol::BackendKeyData key{std::int32_t(raw[0] & 0x7fffffff), std::int32_t(raw[1])};
    if (key.process_id == 0) continue;
    if (entries_.emplace(pack(key), std::nullopt).second) return key;
  }
}

void CancelRegistry::bind(const protocol::BackendKeyData& client_key, Target target) {
  std::lock_guard lock(mutex_);
  entries_[pack(client_key)] = std::move(target);
}

void CancelRegistry::release(const protocol::BackendKeyData& client_key) {
  std::lock_guard lock(mutex_);
  entries_.erase(pack(client_key));
}

std::optional<CancelRegistry::Target> CancelRegistry::find(
    const protocol::BackendKeyData& client_key) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pack(client_key));
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

}  // namespace tokengate::net

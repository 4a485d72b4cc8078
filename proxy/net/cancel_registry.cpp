// Cancel key registry (see cancel_registry.hpp).
#include "proxy/net/cancel_registry.hpp"

#include <botan/system_rng.h>

#include <algorithm>

namespace tokengate::net {

void CancelRegistry::set_instance(unsigned instance_bits, std::uint32_t instance_id) {
  std::lock_guard lock(mutex_);
  instance_bits_ = std::min(instance_bits, 16u);
  instance_id_ = instance_bits_ == 0 ? 0 : instance_id & ((1u << instance_bits_) - 1);
}

std::uint32_t CancelRegistry::instance_of(const protocol::BackendKeyData& key) const noexcept {
  std::lock_guard lock(mutex_);
  if (instance_bits_ == 0) return 0;
  return std::uint32_t(key.secret_key) >> (32 - instance_bits_);
}

protocol::BackendKeyData CancelRegistry::issue() {
  std::lock_guard lock(mutex_);
  for (;;) {
    std::uint32_t raw[2];
    Botan::system_rng().randomize(reinterpret_cast<std::uint8_t*>(raw), sizeof raw);
    // Positive process ids, as PostgreSQL's are: some clients print them.
    if (instance_bits_ > 0) raw[1] = (raw[1] & (0xffffffffu >> instance_bits_)) | (instance_id_ << (32 - instance_bits_));
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

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

std::int32_t CancelRegistry::issue_secret() const {
  std::uint32_t raw;
  Botan::system_rng().randomize(reinterpret_cast<std::uint8_t*>(&raw), sizeof raw);
  std::lock_guard lock(mutex_);
  if (instance_bits_ > 0) raw = (raw & (0xffffffffu >> instance_bits_)) | (instance_id_ << (32 - instance_bits_));
  return std::int32_t(raw);
}

void CancelRegistry::bind(const protocol::BackendKeyData& client_key, Target target) {
  std::lock_guard lock(mutex_);
  entries_.insert_or_assign(pack(client_key), target);
}

void CancelRegistry::release(const protocol::BackendKeyData& client_key,
                             const protocol::BackendKeyData& upstream_key) {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pack(client_key));
  if (it != entries_.end() && it->second.upstream_key.process_id == upstream_key.process_id &&
      it->second.upstream_key.secret_key == upstream_key.secret_key)
    entries_.erase(it);
}

std::optional<CancelRegistry::Target> CancelRegistry::find(const protocol::BackendKeyData& client_key) const {
  std::lock_guard lock(mutex_);
  auto it = entries_.find(pack(client_key));
  if (it == entries_.end()) return std::nullopt;
  return it->second;
}

}  // namespace tokengate::net

// Cancel key registry (see cancel_registry.hpp).
#include "proxy/net/cancel_registry.hpp"

#include <botan/system_rng.h>

#include <algorithm>

namespace tokengate::net {

CancelRegistry::CancelRegistry(unsigned instance_bits, std::uint32_t instance_id)
    : instance_bits_(std::min(instance_bits, 16u)),
      instance_id_(instance_bits_ == 0 ? 0 : instance_id & ((1u << instance_bits_) - 1)) {}

std::int32_t CancelRegistry::issue_secret() const {
  std::uint32_t raw;
  Botan::system_rng().randomize(reinterpret_cast<std::uint8_t*>(&raw), sizeof raw);
  if (instance_bits_ > 0) {
    const std::uint32_t low_mask = 0xffffffffu >> instance_bits_;
    raw = (raw & low_mask) | (instance_id_ << (32 - instance_bits_));
  }
  return std::int32_t(raw);
}

void CancelRegistry::bind(const protocol::BackendKeyData& client_key, Target target) {
  std::lock_guard lock(mutex_);
  entries_.insert_or_assign(pack(client_key), std::move(target));
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

std::uint32_t CancelRegistry::instance_of(const protocol::BackendKeyData& client_key) const noexcept {
  if (instance_bits_ == 0) return 0;
  return std::uint32_t(client_key.secret_key) >> (32 - instance_bits_);
}

}  // namespace tokengate::net

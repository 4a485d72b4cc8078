// Maps the BackendKeyData tokengate gives each client to the upstream
// connection and the upstream's real key, so a CancelRequest can be forwarded.
//
// The key a client gets is the upstream backend's real process ID (clients
// use it with pg_terminate_backend, match it in pg_stat_activity, and tell
// their own NOTIFY from others') with a secret of tokengate's own: the
// upstream's secret never leaves tokengate. The secret is 32 random bits,
// except that in a fleet its top `instance_bits` bits name the instance that
// holds the session, so that an instance receiving a CancelRequest for a key
// it did not issue can send it on to the right peer.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "proxy/net/endpoint.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::net {

class CancelRegistry {
 public:
  struct Target {
    const Endpoint* upstream;  // the server's setting, which outlives every session
    protocol::BackendKeyData upstream_key;
  };

  // Names this instance in every key issued from now on: the secret's top
  // `instance_bits` (≤ 16) bits carry `instance_id`. Call before serving.
  void set_instance(unsigned instance_bits, std::uint32_t instance_id);
  // The instance a key names (0 when keys carry none).
  std::uint32_t instance_of(const protocol::BackendKeyData& key) const noexcept;

  // A fresh random secret for a new client session (the process ID is the
  // backend's, known once the session logged in upstream).
  std::int32_t issue_secret() const;
  // Records where the key's session runs upstream, once logged in.
  void bind(const protocol::BackendKeyData& client_key, Target target);
  // Forgets the key when the session ends, so a late cancel cannot hit a
  // query of whoever gets that backend's process ID next. Only the entry of
  // this very backend is removed (a new session may have reused the key).
  void release(const protocol::BackendKeyData& client_key, const protocol::BackendKeyData& upstream_key);
  // Looks up a key sent in a CancelRequest; nullopt for a key we did not issue.
  std::optional<Target> find(const protocol::BackendKeyData& client_key) const;

 private:
  static std::uint64_t pack(const protocol::BackendKeyData& k) noexcept {
    return (std::uint64_t(std::uint32_t(k.process_id)) << 32) | std::uint32_t(k.secret_key);
  }
  unsigned instance_bits_ = 0;
  std::uint32_t instance_id_ = 0;
  mutable std::mutex mutex_;
  std::unordered_map<std::uint64_t, Target> entries_;
};

}  // namespace tokengate::net

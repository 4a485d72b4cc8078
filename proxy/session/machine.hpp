// The one shape every login-phase machine takes for its driver
// (net/drive.hpp): fed the bytes received so far, it says how many it used,
// what to write to the peer, and whether to read more, step again, or hand
// control back to the caller. Adapters give the client handshake, the
// upstream login and a control query that shape. No I/O here.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "proxy/protocol/frame.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/query_client.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::session {

struct MachineStep {
  enum class Next {
    input,  // read more from the peer, then step again
    again,  // step again (the input may hold the next message already)
    stop,   // hand control back to the caller; the machine says why
  };
  std::size_t consumed = 0;  // bytes of the input used: the driver drops them
  protocol::Bytes to_peer;   // write these first (the driver wipes them after)
  Next next = Next::input;
};

// ClientHandshake over the client's bytes. Stops on everything but a plain
// reply: TLS, a rejection (written first), a cancel, a silent close, or the
// login request; action() says which.
class HandshakeMachine {
 public:
  explicit HandshakeMachine(ClientHandshake& hs) : hs_(hs) {}

  MachineStep step(protocol::ByteView input) {
    MachineStep s;
    auto action = hs_.next(input, s.consumed);
    if (std::holds_alternative<ClientHandshake::NeedMore>(action)) return s;
    if (auto* reply = std::get_if<ClientHandshake::Reply>(&action)) {
      s.to_peer = std::move(reply->bytes);
      s.next = MachineStep::Next::again;
      return s;
    }
    if (std::holds_alternative<ClientHandshake::StartTls>(action)) s.to_peer = protocol::Bytes{'S'};
    if (auto* reject = std::get_if<ClientHandshake::Reject>(&action)) s.to_peer = reject->bytes;
    s.next = MachineStep::Next::stop;
    action_ = std::move(action);
    return s;
  }
  MachineStep end_of_input(protocol::ByteView input) {
    action_ = hs_.on_eof(input);
    return MachineStep{0, {}, MachineStep::Next::stop};
  }
  // What stopped the machine (not NeedMore or Reply).
  ClientHandshake::Action& action() { return action_; }

 private:
  ClientHandshake& hs_;
  ClientHandshake::Action action_ = ClientHandshake::NeedMore{};
};

// A machine fed whole backend messages (UpstreamLogin, QueryClient), framed
// here with a per-message limit. Stops when the inner machine is done or
// failed, or the peer broke the framing or went away (error() says so).
template <typename Inner>
class FramedMachine {
 public:
  FramedMachine(Inner& inner, std::size_t max_message) : inner_(inner), max_message_(max_message) {}

  MachineStep step(protocol::ByteView input) {
    MachineStep s;
    auto fr = protocol::read_frame(input, max_message_);
    if (fr.status == protocol::FrameStatus::need_more) return s;
    s.next = MachineStep::Next::stop;
    if (fr.status == protocol::FrameStatus::bad_length) {
      error_ = "invalid message length from the upstream";
      return s;
    }
    s.consumed = fr.frame.size;
    if constexpr (std::is_same_v<Inner, UpstreamLogin>) {
      auto st = inner_.on_message(fr.frame);
      s.to_peer = std::move(st.to_upstream);
      client_.insert(client_.end(), st.to_client.begin(), st.to_client.end());
      if (st.status == UpstreamLogin::Status::in_progress) s.next = MachineStep::Next::again;
      finished_ = st.status == UpstreamLogin::Status::done;
    } else {
      auto st = inner_.on_message(fr.frame);
      if (st == Inner::Status::in_progress) s.next = MachineStep::Next::again;
      finished_ = st == Inner::Status::done;
    }
    return s;
  }
  MachineStep end_of_input(protocol::ByteView) {
    error_ = "the upstream closed the connection";
    return MachineStep{0, {}, MachineStep::Next::stop};
  }

  // The inner machine reached its goal (ReadyForQuery).
  [[nodiscard]] bool finished() const noexcept { return finished_; }
  // Set when framing broke or the peer closed: the inner machine never
  // finished.
  [[nodiscard]] const std::optional<std::string>& error() const noexcept { return error_; }
  // UpstreamLogin: what it produced for the client so far (ParameterStatus,
  // BackendKeyData, ReadyForQuery, or the upstream's error), written by the
  // caller in one go once the login ends.
  protocol::Bytes take_client_bytes() { return std::exchange(client_, {}); }

 private:
  Inner& inner_;
  std::size_t max_message_;
  bool finished_ = false;
  std::optional<std::string> error_;
  protocol::Bytes client_;
};

}  // namespace tokengate::session

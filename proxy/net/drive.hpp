// The one driver of the login-phase machines (session/machine.hpp) over a
// ByteStream: the client handshake, the upstream login of a session, and the
// control connections' login and queries all run through drive(). The relay
// phase has its own driver. Asio: include only from the driver's .cpp files.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>

#include "proxy/auth/secret.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/input_buffer.hpp"
#include "proxy/session/machine.hpp"

namespace tokengate::net {

struct DriveResult {
  enum class End {
    stopped,   // the machine asked for its caller
    closed,    // the peer went away (the machine's end_of_input() was called)
    io_error,  // a write failed (ec), or the input limit was reached
  };
  End end = End::stopped;
  error_code ec;
};

// Steps `machine` over the bytes in `in`, reading from `peer` when it asks
// for input and writing what it asks to send; returns when it stops or the
// peer is gone. What the machine writes is wiped once written (a password
// answer to the upstream, for one).
template <typename Machine>
asio::awaitable<DriveResult> drive(ByteStream& peer, protocol::InputBuffer& in, Machine& machine) {
  for (;;) {
    session::MachineStep step = machine.step(in.data());
    in.consume(step.consumed);
    if (!step.to_peer.empty()) {
      auto [ec, n] = co_await peer.write(asio::buffer(step.to_peer));
      auth::wipe(step.to_peer.data(), step.to_peer.size());
      if (ec) co_return DriveResult{DriveResult::End::io_error, ec};
    }
    if (step.next == session::MachineStep::Next::stop) co_return DriveResult{};
    if (step.next == session::MachineStep::Next::again) continue;
    auto room = in.prepare();
    if (room.empty()) co_return DriveResult{DriveResult::End::io_error, asio::error::message_size};
    auto [ec, n] = co_await peer.read_some(asio::buffer(room.data(), room.size()));
    if (ec) {
      machine.end_of_input(in.data());
      co_return DriveResult{DriveResult::End::closed, ec};
    }
    in.commit(n);
  }
}

}  // namespace tokengate::net

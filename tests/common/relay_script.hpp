// Drives session::Relay from a byte script (client bytes, upstream bytes,
// statement results) and collects what it writes each way, so a test reads
// as "the client sends … → upstream gets …, client gets …". split_everywhere
// re-feeds a script with each input cut at every offset and checks that the
// outputs do not change.
#pragma once

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/session/relay.hpp"
#include "tests/common/pg_bytes.hpp"

namespace tokengate::test {

struct RelayHarness {
  explicit RelayHarness(session::RelayOptions options = {}) : relay(std::move(options)) {}

  session::Relay relay;
  Bytes upstream_out, client_out;  // everything written so far
  std::vector<session::StatementRequest> requests;

  void client(const Bytes& b) {
    relay.on_client_bytes(b);
    collect();
  }
  void upstream(const Bytes& b) {
    relay.on_upstream_bytes(b);
    collect();
  }
  void result(session::LocalResult r) {
    relay.on_statement_result(std::move(r));
    collect();
  }
  void collect() {
    auto up = relay.to_upstream().flatten();
    auto cl = relay.to_client().flatten();
    upstream_out.insert(upstream_out.end(), up.begin(), up.end());
    client_out.insert(client_out.end(), cl.begin(), cl.end());
    relay.output_done();
    if (auto r = relay.take_statement_request()) requests.push_back(std::move(*r));
  }
  // What was written since the last take.
  Bytes take_upstream() { return std::exchange(upstream_out, {}); }
  Bytes take_client() { return std::exchange(client_out, {}); }
};

// One step of a script.
struct FromClient {
  Bytes bytes;
};
struct FromUpstream {
  Bytes bytes;
};
// The result of the statement requested last.
struct Result {
  std::function<session::LocalResult(const session::StatementRequest&)> make;
};
using Step = std::variant<FromClient, FromUpstream, Result>;

struct ScriptOutcome {
  Bytes upstream, client;
  std::vector<std::string> requests;  // parser_ext::to_string of each
  bool finished = false;
  bool operator==(const ScriptOutcome&) const = default;
};

// Runs `steps`; a byte step is fed in pieces cut at `cuts` offsets of that step
// (only for the step numbered `split_step`).
inline ScriptOutcome run_script(const session::RelayOptions& options, const std::vector<Step>& steps,
                                std::size_t split_step = SIZE_MAX, std::vector<std::size_t> cuts = {}) {
  RelayHarness h(options);
  std::size_t served = 0;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    if (auto* r = std::get_if<Result>(&s)) {
      REQUIRE(served < h.requests.size());
      h.result(r->make(h.requests[served++]));
      continue;
    }
    const bool to_client_side = std::holds_alternative<FromClient>(s);
    const Bytes& b = to_client_side ? std::get<FromClient>(s).bytes : std::get<FromUpstream>(s).bytes;
    std::vector<std::size_t> at;
    if (i == split_step) at = cuts;
    at.push_back(b.size());
    std::size_t from = 0;
    for (std::size_t to : at) {
      if (to <= from || to > b.size()) continue;
      Bytes piece(b.begin() + std::ptrdiff_t(from), b.begin() + std::ptrdiff_t(to));
      if (to_client_side) h.client(piece);
      else h.upstream(piece);
      from = to;
    }
  }
  ScriptOutcome out{h.upstream_out, h.client_out, {}, h.relay.finished()};
  for (const auto& r : h.requests) out.requests.push_back(parser_ext::to_string(r.statement));
  return out;
}

// Feeds the script whole, then once for every byte step cut at each offset,
// then with every byte step cut into single bytes; the outcome must not change.
inline ScriptOutcome split_everywhere(const session::RelayOptions& options, const std::vector<Step>& steps) {
  const ScriptOutcome whole = run_script(options, steps);
  for (std::size_t i = 0; i < steps.size(); ++i) {
    std::size_t size = 0;
    if (auto* c = std::get_if<FromClient>(&steps[i])) size = c->bytes.size();
    else if (auto* u = std::get_if<FromUpstream>(&steps[i])) size = u->bytes.size();
    for (std::size_t k = 1; k < size; ++k) {
      INFO("step " << i << " cut at " << k);
      const ScriptOutcome cut = run_script(options, steps, i, {k});
      CHECK(cut.upstream == whole.upstream);
      CHECK(cut.client == whole.client);
      CHECK(cut.requests == whole.requests);
      if (cut.upstream != whole.upstream || cut.client != whole.client) return whole;  // one failure is enough
    }
    if (size > 1) {
      std::vector<std::size_t> every;
      for (std::size_t k = 1; k < size; ++k) every.push_back(k);
      INFO("step " << i << " byte by byte");
      const ScriptOutcome bytes = run_script(options, steps, i, every);
      CHECK(bytes.upstream == whole.upstream);
      CHECK(bytes.client == whole.client);
    }
  }
  return whole;
}

}  // namespace tokengate::test

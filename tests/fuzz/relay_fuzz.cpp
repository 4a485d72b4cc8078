// libFuzzer target `relay`: a logged-in session's client and upstream byte
// streams, interleaved and cut into reads, through the relay's sans-io parts:
// ClientStream (client framing), ResponseTracker (which upstream answer
// belongs to which client message, ReadyForQuery suppression) and
// StreamTracker, each checked against plain read_frame() framing.
//
// Input: records <c> <bytes…>: c & 1 is the direction (0 client → upstream,
// 1 upstream → client), c >> 1 the number of bytes that follow (0–127; the
// last record may be short). A Query holding an API TOKEN statement is planned
// with parser_ext::plan_query and registered as relay.cpp does (its ordinary
// parts with ReadyForQuery suppressed but for the last).
//
// Properties besides "no crash, no UB, no leak":
// - ClientStream forwards exactly the bytes plain framing says may stream,
//   hands over exactly the whole Query/Parse messages, asks for exactly the
//   size of an incomplete one, and flags impossible lengths and Terminate where
//   plain framing finds them;
// - ResponseTracker's ranges lie inside the chunk, in order, without overlap;
//   whole messages pass or are dropped, and only ReadyForQuery is ever dropped
//   (and only when a suppressed one was registered);
// - the same upstream bytes fed one byte at a time give the same forwarded
//   bytes, errors_seen, tx_status and queue length (chunking never matters);
// - StreamTracker and ResponseTracker agree with plain framing on every tag,
//   every ReadyForQuery status and the first impossible length.
//
// TODO(relay): once session::Relay (proxy/session/relay.hpp) lands, drive it
// here instead of this model of relay.cpp's client pump.
#include <algorithm>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "parser_ext/classifier.hpp"
#include "parser_ext/split.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/client_stream.hpp"
#include "proxy/session/response_tracker.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using session::ResponseTracker;
using fuzz::printable;

namespace {

namespace ft = frontend_tag;
namespace bt = backend_tag;

// ---- the client side -----------------------------------------------------------

struct ClientSide {
  Bytes stream;               // every client byte so far
  session::ClientStream cs;   // under test
  std::size_t cs_forwarded = 0;
  bool cs_stopped = false;    // Terminate or a bad length: the driver closes
  std::vector<std::pair<std::size_t, std::size_t>> inspected;  // (offset, size) handed over whole

  // Plain framing of `stream`, as far as it goes.
  std::size_t ref_pos = 0;     // start of the first message not yet registered
  bool ref_stopped = false;
};

// What plain framing says ClientStream must have done with the bytes so far.
struct ClientExpectation {
  std::size_t forward = 0;
  std::size_t need = 0;
  bool terminate = false;
  bool bad_length = false;
  std::vector<std::pair<std::size_t, std::size_t>> inspect;
};

ClientExpectation expect_client(ByteView all) {
  ClientExpectation e;
  std::size_t pos = 0;
  while (pos < all.size()) {
    auto fr = read_frame(all.subspan(pos));
    if (fr.status == FrameStatus::bad_length) {
      e.bad_length = true;
      break;
    }
    if (all.size() - pos < 5) break;  // header incomplete
    char tag = char(all[pos]);
    std::size_t total = std::size_t(load_u32(all.data() + pos + 1)) + 1;
    if (tag == ft::Query || tag == ft::Parse) {
      if (fr.status != FrameStatus::complete) {
        e.need = total;
        break;
      }
      e.inspect.emplace_back(pos, total);
      pos += total;
      continue;
    }
    if (tag == ft::Terminate) {
      e.terminate = true;
      pos += std::min(total, all.size() - pos);
      break;
    }
    pos += std::min(total, all.size() - pos);  // streams through, whole or not
  }
  e.forward = pos;
  return e;
}

// ---- the upstream side ---------------------------------------------------------

struct UpstreamSide {
  Bytes stream;  // every upstream byte so far
  ResponseTracker chunked{'I'};   // fed the reads as they come
  ResponseTracker bytewise{'I'};  // fed the same bytes one at a time
  StreamTracker framer;
  bool broken = false;  // an impossible length was seen: the relay ends the session
  // Where the read that revealed it began: the relay forwards nothing of that
  // read, but a relay reading byte by byte would have forwarded the bytes up
  // to the bad length already. Only bytes before it are compared.
  std::size_t broken_at = SIZE_MAX;
  std::vector<bool> forwarded_chunked, forwarded_bytewise;  // per stream byte
  std::string tags;       // from StreamTracker
  std::string statuses;   // ReadyForQuery statuses from StreamTracker
  bool suppressed_any = false;
};

void register_message(UpstreamSide& up, char tag, ByteView body) {
  ResponseTracker::Expect expect;
  // After an error PostgreSQL ignores everything but Sync until Sync.
  if (up.chunked.skipping_until_sync() && tag != ft::Sync) {
    FUZZ_CHECK(up.bytewise.skipping_until_sync(), "the two trackers disagree on skipping");
    return;
  }
  if (tag == ft::Query) {
    BodyReader r(body);
    auto text = r.cstr();
    if (text && parser_ext::query_may_contain_api_token_statement(*text)) {
      auto plan = parser_ext::plan_query(*text);
      auto* parts = std::get_if<std::vector<parser_ext::QueryPart>>(&plan);
      if (parts == nullptr) return;  // a syntax error is answered locally
      bool all_ordinary = !parts->empty();
      for (const auto& p : *parts) {
        auto span = std::visit([](const auto& x) { return x.span; }, p);
        FUZZ_CHECK(span.begin <= span.end && span.end <= text->size(),
                   "plan_query span out of bounds in " + printable(*text));
        all_ordinary &= std::holds_alternative<parser_ext::OrdinarySql>(p);
      }
      if (!all_ordinary) {
        // As relay.cpp's handle_query: ordinary runs go upstream one Query
        // each, their ReadyForQuery cut out except the last part's; API
        // TOKEN statements (and an empty string) are answered locally.
        for (std::size_t i = 0; i < parts->size(); ++i) {
          if (!std::holds_alternative<parser_ext::OrdinarySql>((*parts)[i])) continue;
          bool last = i + 1 == parts->size();
          up.chunked.sent(ResponseTracker::Expect::query, !last);
          up.bytewise.sent(ResponseTracker::Expect::query, !last);
          up.suppressed_any |= !last;
        }
        return;
      }
    }
  }
  if (!ResponseTracker::expectation_for(tag, expect)) return;
  up.chunked.sent(expect);
  up.bytewise.sent(expect);
}

// Feeds every client message that plain framing finds complete to the trackers.
void register_client_messages(ClientSide& c, UpstreamSide& up) {
  while (!c.ref_stopped) {
    ByteView rest(c.stream.data() + c.ref_pos, c.stream.size() - c.ref_pos);
    auto fr = read_frame(rest);
    if (fr.status == FrameStatus::bad_length) {
      c.ref_stopped = true;
      return;
    }
    if (fr.status != FrameStatus::complete) return;
    register_message(up, fr.frame.tag, fr.frame.body);
    c.ref_pos += fr.frame.size;
    if (fr.frame.tag == ft::Terminate) c.ref_stopped = true;
  }
}

void client_read(ClientSide& c, UpstreamSide& up, ByteView chunk) {
  c.stream.insert(c.stream.end(), chunk.begin(), chunk.end());
  if (!c.cs_stopped) {
    ByteView pending(c.stream.data() + c.cs_forwarded, c.stream.size() - c.cs_forwarded);
    auto base = c.cs_forwarded;
    auto scan = c.cs.scan(pending, [&](const Frame& f) {
      auto off = std::size_t(f.body.data() - c.stream.data()) - 5;
      FUZZ_CHECK(off >= base && off + f.size <= c.stream.size() && f.body.size() + 5 == f.size,
                 "ClientStream handed over a frame outside the data");
      c.inspected.emplace_back(off, f.size);
    });
    FUZZ_CHECK(scan.forward <= pending.size(), "ClientStream forwards more than it was given");
    c.cs_forwarded += scan.forward;
    if (scan.terminate || scan.bad_length) c.cs_stopped = true;

    auto e = expect_client(ByteView(c.stream.data(), c.stream.size()));
    auto show = [&] {
      return "client stream " + printable(ByteView(c.stream.data(), c.stream.size())) + "\nforwarded " +
             std::to_string(c.cs_forwarded) + ", expected " + std::to_string(e.forward) + "; need " +
             std::to_string(scan.need) + " vs " + std::to_string(e.need) + "; terminate " +
             std::to_string(scan.terminate) + " vs " + std::to_string(e.terminate) + "; bad_length " +
             std::to_string(scan.bad_length) + " vs " + std::to_string(e.bad_length);
    };
    FUZZ_CHECK(c.cs_forwarded == e.forward, show());
    FUZZ_CHECK(scan.terminate == e.terminate && scan.bad_length == e.bad_length, show());
    if (scan.need != 0 || e.need != 0)
      FUZZ_CHECK(scan.need == e.need, show());
    FUZZ_CHECK(c.inspected == e.inspect, "ClientStream handed over other Query/Parse messages than plain framing\n" + show());
  }
  register_client_messages(c, up);
}

void check_ranges(const std::vector<std::pair<std::size_t, std::size_t>>& ranges, std::size_t n) {
  std::size_t at = 0;
  for (auto [b, e] : ranges) {
    FUZZ_CHECK(b >= at && b < e && e <= n, "forward ranges out of order, empty or outside the chunk");
    at = e;
  }
}

void upstream_read(UpstreamSide& up, ByteView chunk) {
  if (up.broken) return;
  std::size_t base = up.stream.size();
  up.stream.insert(up.stream.end(), chunk.begin(), chunk.end());
  up.forwarded_chunked.resize(up.stream.size(), false);
  up.forwarded_bytewise.resize(up.stream.size(), false);

  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  bool ok = up.chunked.feed(chunk, ranges);
  check_ranges(ranges, chunk.size());
  for (auto [b, e] : ranges)
    for (auto i = b; i < e; ++i) up.forwarded_chunked[base + i] = true;

  bool ok_bytewise = true;
  for (std::size_t i = 0; i < chunk.size() && ok_bytewise; ++i) {
    ranges.clear();
    ok_bytewise = up.bytewise.feed(chunk.subspan(i, 1), ranges);
    check_ranges(ranges, 1);
    if (!ranges.empty()) up.forwarded_bytewise[base + i] = true;
  }
  bool ok_framer = up.framer.feed(
      chunk, [&](char tag, std::uint32_t) { up.tags += tag; }, [&](char s) { up.statuses += s; });

  FUZZ_CHECK(ok == ok_bytewise && ok == ok_framer,
             "trackers disagree on an impossible length: chunked " + std::to_string(ok) + ", bytewise " +
                 std::to_string(ok_bytewise) + ", StreamTracker " + std::to_string(ok_framer));
  if (!ok) {
    up.broken = true;
    up.broken_at = base;
  }
}

// The checks that need the whole upstream stream.
void check_upstream(const UpstreamSide& up) {
  ByteView all(up.stream.data(), up.stream.size());
  std::string tags, statuses;
  std::size_t errors = 0, pos = 0;
  while (pos < all.size()) {
    auto fr = read_frame(all.subspan(pos));
    if (fr.status == FrameStatus::bad_length) {
      FUZZ_CHECK(up.broken, "plain framing finds an impossible length the trackers accepted");
      break;
    }
    if (all.size() - pos >= 5) tags += char(all[pos]);  // header complete
    if (fr.status != FrameStatus::complete) break;
    const auto& f = fr.frame;
    if (f.tag == bt::ReadyForQuery && f.body.size() >= 1) statuses += char(f.body.back());
    if (f.tag == bt::ErrorResponse) ++errors;
    if (pos + f.size > up.broken_at) {
      pos += f.size;
      continue;
    }
    // A whole message either passes or is dropped, and only ReadyForQuery may be dropped.
    bool first = up.forwarded_chunked[pos];
    for (std::size_t i = pos; i < pos + f.size; ++i)
      FUZZ_CHECK(up.forwarded_chunked[i] == first, "a message was forwarded in part, at offset " + std::to_string(pos));
    if (!first)
      FUZZ_CHECK(f.tag == bt::ReadyForQuery && up.suppressed_any,
                 std::string("a message was dropped: tag ") + f.tag + " at offset " + std::to_string(pos));
    pos += f.size;
  }
  const std::size_t compared = std::min(up.broken_at, up.stream.size());
  FUZZ_CHECK(std::equal(up.forwarded_chunked.begin(), up.forwarded_chunked.begin() + std::ptrdiff_t(compared),
                        up.forwarded_bytewise.begin()),
             "forwarded bytes depend on how the stream was split");
  FUZZ_CHECK(up.chunked.errors_seen() == up.bytewise.errors_seen() && up.chunked.errors_seen() == errors,
             "errors_seen " + std::to_string(up.chunked.errors_seen()) + "/" +
                 std::to_string(up.bytewise.errors_seen()) + ", plain framing counts " + std::to_string(errors));
  FUZZ_CHECK(up.chunked.tx_status() == up.bytewise.tx_status(), "tx_status depends on chunking");
  FUZZ_CHECK(up.chunked.outstanding() == up.bytewise.outstanding(), "queue length depends on chunking");
  if (!up.broken) {
    FUZZ_CHECK(up.tags == tags, "StreamTracker tags " + printable(up.tags) + ", plain framing " + printable(tags));
    FUZZ_CHECK(up.statuses == statuses,
               "StreamTracker statuses " + printable(up.statuses) + ", plain framing " + printable(statuses));
    // ReadyForQuery's status byte is the one tracked.
    if (!statuses.empty() && pos == all.size())
      FUZZ_CHECK(up.chunked.tx_status() == statuses.back(), "tx_status is not the last ReadyForQuery's");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  ClientSide client;
  UpstreamSide upstream;
  std::size_t i = 0;
  while (i < size) {
    std::uint8_t c = data[i++];
    std::size_t n = std::min<std::size_t>(c >> 1, size - i);
    ByteView chunk(data + i, n);
    i += n;
    if (n == 0) continue;
    if (c & 1)
      upstream_read(upstream, chunk);
    else
      client_read(client, upstream, chunk);
  }
  check_upstream(upstream);
  return 0;
}

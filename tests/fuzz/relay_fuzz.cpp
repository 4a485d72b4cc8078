// libFuzzer target `relay`: a logged-in session's client and upstream byte
// streams, interleaved and cut into reads, through session::Relay (the
// sans-io relay machine), with the API TOKEN statements it asks to run
// answered by a fake in memory: this tests the machine, not the token store.
//
// Input: one options byte, then records.
//   options: bits 0-1 the upstream's transaction status at login (I, T, E, I),
//   bit 2 refuse_password_changes, bit 3 standard_conforming_strings off,
//   bits 4-5 client_encoding (UTF8, SJIS, LATIN1, BIG5), bits 6-7 the memory
//   limits (defaults; max_inspected_message 1024; that and an 8 KiB session
//   limit; 2048 with a 16 KiB session limit and a 12 KiB process budget).
//   record: a byte c, then
//     c & 3 == 0  client bytes: c >> 2 of them (1-63; 0: a big-endian u16 follows)
//     c & 3 == 1  upstream bytes, likewise
//     c & 3 == 2  the result of the statement requested last, shaped by c >> 2:
//                 bit 0 an error, bits 1-2 rows, bit 3 NULLs, bit 4 a notice
//     c & 3 == 3  by (c >> 2) & 3: client EOF, upstream EOF, end(FATAL), nothing
//
// Properties besides "no crash, no UB, no leak":
// - the upstream gets the client's messages in order, byte for byte, some held
//   back (answered locally, or skipped after an error until Sync; never a Sync
//   or a Terminate), plus only what tokengate sends itself: Flush, the Parse
//   that fails a transaction (with a Sync after a simple Query), and the
//   ordinary parts of a Query split around API TOKEN statements (substrings of
//   it). Checked by matching the two message sequences (upstream_explained).
// - no whole Query or Parse that reaches the upstream holds an API TOKEN
//   statement (split with split_statements and each statement parsed, not
//   through the relay's fast path), nor, in a session that may not change
//   passwords, a password change;
// - the client gets the upstream's bytes in order, each message whole or not
//   at all; the only messages dropped are ReadyForQuery of a split Query and
//   answers to tokengate's own messages, never an asynchronous one;
// - local answers are whole messages and land only between whole messages of
//   what the client receives (the boundary rule);
// - output slices of the bytes fed point into that call's bytes only (each
//   read is a fresh heap copy freed after the call: ASan sees a stale slice);
// - the same records fed byte by byte, or with consecutive reads of one side
//   merged, give the same bytes each way, the same statement requests and the
//   same ending (with the default memory limits only: where a limit can be
//   reached, buffer growth depends on read sizes);
// - the session's memory account stays within relay.session_memory_limit, the
//   process budget within its limit and equal to the account, and is 0 after.
#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_set>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/role_password.hpp"
#include "parser_ext/split.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/protocol/result_set.hpp"
#include "proxy/session/relay.hpp"
#include "proxy/session/token_sql.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using session::LocalResult;
using session::Relay;
using session::RelayOptions;
using session::StatementRequest;
using fuzz::printable;

namespace {

namespace ft = frontend_tag;
namespace bt = backend_tag;

// ---- input ---------------------------------------------------------------------

struct Config {
  RelayOptions relay;
  std::size_t process_budget = 0;  // 0: no process-wide budget
  bool limits_reachable = false;   // a memory limit may end the session
};

Config decode_options(std::uint8_t b) {
  Config c;
  static constexpr char kTx[] = {'I', 'T', 'E', 'I'};
  static constexpr const char* kEncodings[] = {"UTF8", "SJIS", "LATIN1", "BIG5"};
  c.relay.tx_status = kTx[b & 3];
  c.relay.refuse_password_changes = (b & 4) != 0;
  c.relay.standard_conforming_strings = (b & 8) == 0;
  c.relay.client_encoding = kEncodings[(b >> 4) & 3];
  switch (b >> 6) {
    case 0: break;
    case 1: c.relay.max_inspected_message = 1024; break;
    case 2:
      c.relay.max_inspected_message = 1024;
      c.relay.session_memory_limit = 8 * 1024;
      c.limits_reachable = true;
      break;
    default:
      c.relay.max_inspected_message = 2048;
      c.relay.session_memory_limit = 16 * 1024;
      c.process_budget = 12 * 1024;
      c.limits_reachable = true;
      break;
  }
  return c;
}

enum class Kind : std::uint8_t { client, upstream, result, event };
struct Record {
  Kind kind;
  std::uint8_t arg = 0;  // result shape or event
  Bytes bytes;
};

std::vector<Record> decode_records(const std::uint8_t* data, std::size_t size) {
  std::vector<Record> out;
  std::size_t i = 0;
  while (i < size) {
    const std::uint8_t c = data[i++];
    const auto kind = Kind(c & 3);
    if (kind == Kind::result || kind == Kind::event) {
      out.push_back({kind, std::uint8_t(c >> 2), {}});
      continue;
    }
    std::size_t n = c >> 2;
    if (n == 0) {
      if (size - i < 2) break;
      n = std::size_t(data[i]) << 8 | data[i + 1];
      i += 2;
    }
    n = std::min(n, size - i);
    if (n > 0) out.push_back({kind, 0, Bytes(data + i, data + i + n)});
    i += n;
  }
  return out;
}

// Consecutive reads of one side as one read.
std::vector<Record> merged(const std::vector<Record>& in) {
  std::vector<Record> out;
  for (const auto& r : in) {
    if (!out.empty() && r.kind == out.back().kind && (r.kind == Kind::client || r.kind == Kind::upstream))
      out.back().bytes.insert(out.back().bytes.end(), r.bytes.begin(), r.bytes.end());
    else
      out.push_back(r);
  }
  return out;
}

// ---- the fake token service ------------------------------------------------------

Value value_for(const Column& col, std::size_t row, std::size_t i, bool nulls) {
  if (nulls && (row + i) % 2 == 1) return std::monostate{};
  switch (col.type_oid) {
    case type_oid::int8: return std::int64_t(row * 1000 + i);
    case type_oid::timestamptz: return Timestamp::from_unix_seconds(1'800'000'000 + std::int64_t(row));
    default: return "v" + std::to_string(row) + "_" + std::to_string(i);
  }
}

LocalResult fake_result(const StatementRequest& req, std::uint8_t shape) {
  LocalResult r;
  r.kind = parser_ext::kind_of(req.statement);
  r.columns = session::columns_of(req.statement);
  if (shape & 16)
    r.notices.push_back(ErrorResponse::make("NOTICE", "25001", "API TOKEN statements are not transactional"));
  if (shape & 1) {
    r.error = ErrorResponse::make("ERROR", "42704", "API token \"t\" does not exist");
    return r;
  }
  const std::size_t rows = r.columns.empty() ? 0 : (shape >> 1) & 3;
  for (std::size_t row = 0; row < rows; ++row) {
    std::vector<Value> values;
    for (std::size_t i = 0; i < r.columns.size(); ++i) values.push_back(value_for(r.columns[i], row, i, shape & 8));
    r.rows.push_back(std::move(values));
  }
  r.command_tag = std::string(parser_ext::command_tag(r.kind));
  r.executed = true;
  return r;
}

// ---- one run ---------------------------------------------------------------------

struct Observed {
  Bytes client_stream, upstream_stream;  // every byte fed, per side
  Bytes to_upstream, to_client;          // every byte written, per side
  std::vector<std::string> requests;
  bool finished = false;
  Relay::Ending ending = Relay::Ending::none;

  // Attribution (each run): which upstream bytes reached the client, which
  // bytes of to_client are the relay's own, and the session settings around
  // each write upstream (for the checks that parse SQL).
  std::vector<std::uint8_t> upstream_forwarded;
  std::vector<std::pair<std::size_t, std::size_t>> owned_client_runs;  // [begin, end) of to_client
  struct LexWindow {
    std::size_t begin;                        // offset in to_upstream where the call's output starts
    std::size_t upstream_from, upstream_to;   // the upstream bytes of the call (none: equal)
    parser_ext::LexOptions before, after;
    bool finished_after;
  };
  std::vector<LexWindow> lex_windows;
};

bool inside(const std::uint8_t* p, std::size_t n, const Bytes& buf) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(buf.data());
  return !buf.empty() && a >= b && a + n <= b + buf.size();
}
bool overlaps(const std::uint8_t* p, std::size_t n, const Bytes& buf) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto b = reinterpret_cast<std::uintptr_t>(buf.data());
  return !buf.empty() && a < b + buf.size() && b < a + n;
}

enum class Split { as_given, bytewise, merged };

Observed run(const Config& cfg, const std::vector<Record>& records, Split split) {
  Observed o;
  std::optional<session::MemoryBudget> budget;
  if (cfg.process_budget != 0) budget.emplace(cfg.process_budget);
  RelayOptions options = cfg.relay;
  options.process_memory = budget ? &*budget : nullptr;
  {
    Relay relay(options);
    std::optional<StatementRequest> pending;
    std::size_t client_sent_to = 0;    // client stream offset after the last forwarded input slice
    std::size_t upstream_sent_to = 0;  // upstream stream offset, likewise

    // After every call: take both outputs and check their slices. `fed` is
    // the bytes of this call (empty for results and events), `side` whose.
    auto collect = [&](const Bytes& fed, Kind side, std::size_t stream_base, parser_ext::LexOptions lex_before) {
      const std::size_t upstream_to = o.upstream_stream.size();  // the call's bytes are in it already
      o.lex_windows.push_back({o.to_upstream.size(), side == Kind::upstream ? stream_base : upstream_to, upstream_to,
                               lex_before, relay.lex_options(), relay.finished()});
      relay.to_upstream().for_each([&](ByteView v) {
        if (side == Kind::client && inside(v.data(), v.size(), fed)) {
          const std::size_t off = stream_base + std::size_t(v.data() - fed.data());
          FUZZ_CHECK(off >= client_sent_to, "client bytes forwarded twice or out of order, at " + std::to_string(off));
          client_sent_to = off + v.size();
        } else {
          FUZZ_CHECK(!overlaps(v.data(), v.size(), fed), "a slice straddles the end of the bytes fed");
        }
        o.to_upstream.insert(o.to_upstream.end(), v.begin(), v.end());
      });
      relay.to_client().for_each([&](ByteView v) {
        if (side == Kind::upstream && inside(v.data(), v.size(), fed)) {
          const std::size_t off = stream_base + std::size_t(v.data() - fed.data());
          FUZZ_CHECK(off >= upstream_sent_to,
                     "upstream bytes forwarded twice or out of order, at " + std::to_string(off));
          upstream_sent_to = off + v.size();
          std::fill(o.upstream_forwarded.begin() + std::ptrdiff_t(off),
                    o.upstream_forwarded.begin() + std::ptrdiff_t(off + v.size()), 1);
        } else {
          FUZZ_CHECK(!overlaps(v.data(), v.size(), fed), "a slice straddles the end of the bytes fed");
          const std::size_t at = o.to_client.size();
          if (!o.owned_client_runs.empty() && o.owned_client_runs.back().second == at)
            o.owned_client_runs.back().second += v.size();
          else
            o.owned_client_runs.emplace_back(at, at + v.size());
        }
        o.to_client.insert(o.to_client.end(), v.begin(), v.end());
      });
      relay.output_done();

      const auto& mem = relay.memory();
      FUZZ_CHECK(mem.used() <= cfg.relay.session_memory_limit,
                 "the session holds " + std::to_string(mem.used()) + " bytes, over its limit of " +
                     std::to_string(cfg.relay.session_memory_limit));
      if (budget) {
        FUZZ_CHECK(budget->used() <= budget->limit(), "the process budget is over its limit");
        FUZZ_CHECK(budget->used() == mem.used(), "the process budget and the session's account disagree: " +
                                                     std::to_string(budget->used()) + " vs " +
                                                     std::to_string(mem.used()));
      }
      if (auto r = relay.take_statement_request()) {
        FUZZ_CHECK(!pending, "a second statement was requested before the first one's result");
        o.requests.push_back(parser_ext::to_string(r->statement));
        pending = std::move(r);
      }
    };

    auto feed = [&](Kind side, const std::uint8_t* p, std::size_t n) {
      Bytes fed(p, p + n);  // its own allocation, freed after the call
      Bytes& stream = side == Kind::client ? o.client_stream : o.upstream_stream;
      const std::size_t base = stream.size();
      stream.insert(stream.end(), p, p + n);
      if (side == Kind::upstream) o.upstream_forwarded.resize(stream.size(), 0);
      const auto lex = relay.lex_options();
      if (side == Kind::client) relay.on_client_bytes(fed);
      else relay.on_upstream_bytes(fed);
      collect(fed, side, base, lex);
    };

    const std::vector<Record> recs = split == Split::merged ? merged(records) : records;
    for (const auto& r : recs) {
      const auto lex = relay.lex_options();
      switch (r.kind) {
        case Kind::client:
        case Kind::upstream:
          if (split == Split::bytewise)
            for (std::size_t i = 0; i < r.bytes.size(); ++i) feed(r.kind, r.bytes.data() + i, 1);
          else
            feed(r.kind, r.bytes.data(), r.bytes.size());
          break;
        case Kind::result:
          if (pending) {
            relay.on_statement_result(fake_result(*pending, r.arg));
            pending.reset();
          }
          collect({}, Kind::result, 0, lex);
          break;
        case Kind::event:
          switch (r.arg & 3) {
            case 0: relay.on_client_eof(); break;
            case 1: relay.on_upstream_eof(); break;
            case 2: relay.end(ErrorResponse::make("FATAL", "57P01", "terminating connection: API token revoked")); break;
            default: break;
          }
          collect({}, Kind::event, 0, lex);
          break;
      }
    }
    o.finished = relay.finished();
    o.ending = relay.ending();
  }
  if (budget) FUZZ_CHECK(budget->used() == 0, "a finished session did not give its memory back to the process budget");
  return o;
}

// ---- message framing ---------------------------------------------------------------

struct Msg {
  std::size_t begin = 0, end = 0;  // end may lie past the stream for a partial one
  char tag = 0;
  bool partial = false;
};

// Plain framing of a whole stream; `bad_at` is where an impossible length starts.
std::vector<Msg> frame_all(const Bytes& s, std::size_t& bad_at) {
  std::vector<Msg> out;
  bad_at = SIZE_MAX;
  std::size_t pos = 0;
  while (pos < s.size()) {
    auto fr = read_frame(ByteView(s).subspan(pos));
    if (fr.status == FrameStatus::bad_length) {
      bad_at = pos;
      break;
    }
    if (fr.status == FrameStatus::complete) {
      out.push_back({pos, pos + fr.frame.size, fr.frame.tag, false});
      pos += fr.frame.size;
      continue;
    }
    std::size_t total = s.size() - pos >= 5 ? std::size_t(load_u32(s.data() + pos + 1)) + 1 : SIZE_MAX;
    out.push_back({pos, total == SIZE_MAX ? SIZE_MAX : pos + total, char(s[pos]), true});
    break;
  }
  return out;
}

ByteView view(const Bytes& s, const Msg& m) {
  return ByteView(s.data() + m.begin, std::min(m.end, s.size()) - m.begin);
}

std::string describe(const Bytes& s, const std::vector<Msg>& msgs, std::size_t limit = 40) {
  std::string out;
  for (std::size_t i = 0; i < msgs.size() && i < limit; ++i)
    out += "  [" + std::to_string(i) + "] " + printable(view(s, msgs[i]), 120) + (msgs[i].partial ? " (partial)" : "") +
           "\n";
  if (msgs.size() > limit) out += "  …" + std::to_string(msgs.size()) + " messages\n";
  return out;
}

// The text PostgreSQL reads from a Query: up to its zero byte, which must end
// the message (else PostgreSQL refuses the message and runs nothing).
std::optional<std::string_view> query_text(ByteView body) {
  if (body.empty() || body.back() != 0) return std::nullopt;
  std::string_view text(reinterpret_cast<const char*>(body.data()), body.size() - 1);
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  return text;
}

// A Query's body without its final zero byte, as the relay splits it.
std::string_view raw_text(ByteView body) {
  std::string_view text(reinterpret_cast<const char*>(body.data()), body.size());
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  return text;
}

// The statement text of a Parse.
std::optional<std::string_view> parse_text(ByteView body) {
  BodyReader r(body);
  if (!r.cstr()) return std::nullopt;
  return r.cstr();
}

// The session settings the splitter depends on after each ParameterStatus
// of the upstream stream, as PostgreSQL reports them and the relay reads
// them (the first 256 bytes of the body: relay.cpp's kMaxCapturedBody).
struct SettingsChange {
  std::size_t at;  // end of the ParameterStatus message in the upstream stream
  parser_ext::LexOptions lex;
};

std::vector<SettingsChange> settings_changes(const Bytes& upstream, const std::vector<Msg>& msgs,
                                             parser_ext::LexOptions lex) {
  std::vector<SettingsChange> out;
  for (const auto& m : msgs) {
    if (m.partial || m.tag != bt::ParameterStatus) continue;
    auto body = view(upstream, m).subspan(5);
    std::string_view b(reinterpret_cast<const char*>(body.data()), std::min<std::size_t>(body.size(), 256));
    const auto nul = b.find('\0');
    if (nul == std::string_view::npos) continue;
    const auto name = b.substr(0, nul);
    auto value = b.substr(nul + 1);
    if (!value.empty() && value.back() == '\0') value.remove_suffix(1);
    if (name == "standard_conforming_strings") lex.standard_conforming_strings = value == "on";
    else if (name == "client_encoding") lex.encoding = parser_ext::client_encoding_from_name(value);
    else continue;
    out.push_back({m.end, lex});
  }
  return out;
}

bool holds_api_token_statement(std::string_view text, bool whole_query, const parser_ext::LexOptions& lex) {
  if (!whole_query) return std::holds_alternative<parser_ext::Statement>(parser_ext::parse_statement(text, lex));
  auto spans = parser_ext::split_statements(text, lex);
  if (auto* s = std::get_if<std::vector<parser_ext::StatementSpan>>(&spans)) {
    for (const auto& span : *s)
      if (std::holds_alternative<parser_ext::Statement>(parser_ext::parse_statement(text, span.begin, span.end, lex)))
        return true;
  }
  return false;
}

// ---- upstream: the client's messages, and tokengate's own -----------------------------

const Bytes& flush_message() {
  static const Bytes b{'H', 0, 0, 0, 4};
  return b;
}
const Bytes& sync_message() {
  static const Bytes b{'S', 0, 0, 0, 4};
  return b;
}
// The Parse relay.cpp sends to fail the upstream's transaction.
const Bytes& failure_parse() {
  static const Bytes b = [] {
    Bytes m;
    MessageWriter(m, ft::Parse)
        .cstr("tokengate_failed_api_token_statement")
        .cstr("tokengate: an API TOKEN statement failed in this transaction")
        .i16(0);
    return m;
  }();
  return b;
}

bool equal(ByteView a, const Bytes& b) { return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin()); }
bool equal(ByteView a, ByteView b) { return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin()); }
bool is_prefix(ByteView a, ByteView of) { return a.size() <= of.size() && std::equal(a.begin(), a.end(), of.begin()); }

// Whether the messages written upstream (out) are the client's (in), in
// order, some held back, plus tokengate's own. A search over (out index,
// client index, whether the client message before was held back), depth
// first, trying the likeliest explanation first. Gives up (true) past a
// budget of states: inputs that large are rare and the check is then skipped.
struct UpstreamMatch {
  bool ok = false;
  std::size_t best_out = 0;  // the furthest out message explained, for the report
};

UpstreamMatch upstream_explained(const Bytes& out_s, const std::vector<Msg>& out, const Bytes& in_s,
                                 const std::vector<Msg>& in) {
  UpstreamMatch m;
  const std::size_t n_out = out.size(), n_in = in.size();
  std::unordered_set<std::uint64_t> seen;
  struct State {
    std::size_t i, j;
    bool held_last;
  };
  std::vector<State> stack{{0, 0, false}};
  constexpr std::size_t kBudget = 1'000'000;
  while (!stack.empty()) {
    const State s = stack.back();
    stack.pop_back();
    const std::uint64_t key = (std::uint64_t(s.i) << 33) | (std::uint64_t(s.j) << 1) | (s.held_last ? 1 : 0);
    if (!seen.insert(key).second) continue;
    if (seen.size() > kBudget) {
      m.ok = true;
      return m;
    }
    m.best_out = std::max(m.best_out, s.i);
    if (s.i == n_out) {
      m.ok = true;
      return m;
    }
    const ByteView o = view(out_s, out[s.i]);
    // Pushed in reverse order of preference.
    // Held back: anything but a Sync or a Terminate.
    if (s.j < n_in && in[s.j].tag != ft::Sync && in[s.j].tag != ft::Terminate) stack.push_back({s.i, s.j + 1, true});
    if (!out[s.i].partial) {
      // A part of a Query held back just before.
      if (s.held_last && s.j > 0 && in[s.j - 1].tag == ft::Query && out[s.i].tag == ft::Query && !in[s.j - 1].partial) {
        const auto part = raw_text(o.subspan(5));
        const auto whole = raw_text(view(in_s, in[s.j - 1]).subspan(5));
        if (whole.find(part) != std::string_view::npos) stack.push_back({s.i + 1, s.j, true});
      }
      // tokengate's own messages.
      if (equal(o, flush_message()) || equal(o, failure_parse()) ||
          (equal(o, sync_message()) && s.i > 0 && equal(view(out_s, out[s.i - 1]), failure_parse())))
        stack.push_back({s.i + 1, s.j, s.held_last});
    }
    // The client's next message, whole (or its beginning, at the end).
    if (s.j < n_in) {
      const ByteView c = view(in_s, in[s.j]);
      if (out[s.i].partial ? is_prefix(o, c) : (!in[s.j].partial && equal(o, c)))
        stack.push_back({s.i + 1, s.j + 1, false});
    }
  }
  return m;
}

bool is_async(char tag) {
  return tag == bt::NoticeResponse || tag == bt::NotificationResponse || tag == bt::ParameterStatus;
}

void check(const Config& cfg, const Observed& o) {
  const std::string streams = "\nclient stream:   " + printable(o.client_stream, 1500) +
                              "\nupstream stream: " + printable(o.upstream_stream, 1500) +
                              "\nto upstream:     " + printable(o.to_upstream, 1500) +
                              "\nto client:       " + printable(o.to_client, 1500);

  // ---- the session settings the splitter uses ----
  std::size_t bad_up = 0;
  const auto up = frame_all(o.upstream_stream, bad_up);
  parser_ext::LexOptions initial{cfg.relay.standard_conforming_strings,
                                 parser_ext::client_encoding_from_name(cfg.relay.client_encoding)};
  const auto changes = settings_changes(o.upstream_stream, up, initial);
  auto settings_at = [&](std::size_t at) {  // after the upstream bytes before `at`
    auto it = std::upper_bound(changes.begin(), changes.end(), at,
                               [](std::size_t a, const SettingsChange& c) { return a < c.at; });
    return it == changes.begin() ? initial : std::prev(it)->lex;
  };
  for (const auto& w : o.lex_windows)
    if (!w.finished_after)
      FUZZ_CHECK(w.after == settings_at(w.upstream_to),
                 "the relay's session settings are not those of the last ParameterStatus, after upstream byte " +
                     std::to_string(w.upstream_to) + streams);

  // ---- what went upstream ----
  std::size_t bad_out = 0, bad_in = 0;
  const auto out = frame_all(o.to_upstream, bad_out);
  const auto in = frame_all(o.client_stream, bad_in);
  FUZZ_CHECK(bad_out == SIZE_MAX, "a message with an impossible length went upstream" + streams);
  for (std::size_t k = 0; k + 1 < out.size(); ++k)
    FUZZ_CHECK(!out[k].partial, "an incomplete message went upstream before another" + streams);
  const auto match = upstream_explained(o.to_upstream, out, o.client_stream, in);
  FUZZ_CHECK(match.ok, "what went upstream is not the client's messages plus tokengate's own; unexplained from message " +
                           std::to_string(match.best_out) + "\nupstream got:\n" + describe(o.to_upstream, out) +
                           "client sent:\n" + describe(o.client_stream, in) + streams);

  // Whether tokengate split a Query or held one back (a Query went upstream
  // more or less often than the client sent it), or failed a transaction.
  bool split = false, injected = false;
  {
    std::map<std::string, long> queries;  // sent upstream minus sent by the client
    for (const auto& m : out)
      if (!m.partial && m.tag == ft::Query) ++queries[std::string(as_chars(view(o.to_upstream, m)))];
    for (const auto& c : in)
      if (!c.partial && c.tag == ft::Query) --queries[std::string(as_chars(view(o.client_stream, c)))];
    for (const auto& [q, n] : queries) split |= n != 0;
  }
  for (const auto& m : out) {
    if (m.partial) continue;
    const ByteView msg = view(o.to_upstream, m);
    if (equal(msg, failure_parse())) injected = true;
    if (m.tag != ft::Query && m.tag != ft::Parse) continue;

    auto text = m.tag == ft::Query ? query_text(msg.subspan(5)) : parse_text(msg.subspan(5));
    if (!text) continue;  // PostgreSQL refuses the message
    // The session settings while the message was written: those at the start
    // of the call that wrote it, or after a ParameterStatus the call read.
    auto w = std::upper_bound(o.lex_windows.begin(), o.lex_windows.end(), m.begin,
                              [](std::size_t at, const Observed::LexWindow& lw) { return at < lw.begin; });
    FUZZ_CHECK(w != o.lex_windows.begin(), "no call wrote this message");
    --w;
    std::vector<parser_ext::LexOptions> possible{w->before};
    for (const auto& c : changes)
      if (c.at > w->upstream_from && c.at <= w->upstream_to) possible.push_back(c.lex);
    const bool whole_query = m.tag == ft::Query;
    FUZZ_CHECK(!std::all_of(possible.begin(), possible.end(),
                            [&](const auto& lex) { return holds_api_token_statement(*text, whole_query, lex); }),
               "an API TOKEN statement went upstream: " + printable(*text) + streams);
    if (cfg.relay.refuse_password_changes)
      FUZZ_CHECK(!std::all_of(possible.begin(), possible.end(),
                              [&](const auto& lex) { return parser_ext::changes_role_password(*text, lex); }),
                 "a password change went upstream from a session that may not make one: " + printable(*text) + streams);
  }

  // ---- what reached the client from the upstream ----
  std::size_t last_forwarded_end = 0;
  for (std::size_t k = 0; k < o.upstream_forwarded.size(); ++k)
    if (o.upstream_forwarded[k]) last_forwarded_end = k + 1;
  bool partial_seen = false;
  for (const auto& m : up) {
    const std::size_t end = std::min(m.end, o.upstream_stream.size());
    std::size_t f = 0;
    while (m.begin + f < end && o.upstream_forwarded[m.begin + f]) ++f;
    for (std::size_t k = m.begin + f; k < end; ++k)
      FUZZ_CHECK(!o.upstream_forwarded[k], "an upstream message reached the client with a hole in it, at " +
                                               std::to_string(m.begin) + streams);
    if (f > 0 && m.begin + f < m.end) {
      // Only the message the session ended in, or the stream ended in.
      FUZZ_CHECK(!partial_seen && (o.finished || m.partial),
                 "an upstream message reached the client in part, at " + std::to_string(m.begin) + streams);
      partial_seen = true;
    }
    // A message dropped whole: only where tokengate's own work explains it.
    // Past the last forwarded byte of a finished session nothing was read.
    const bool consumed = !m.partial && (o.finished ? m.end <= last_forwarded_end : true);
    if (f == 0 && consumed) {
      FUZZ_CHECK(!is_async(m.tag), std::string("an asynchronous message was dropped: tag ") + m.tag + " at " +
                                       std::to_string(m.begin) + streams);
      FUZZ_CHECK(m.tag == bt::ReadyForQuery ? (split || injected) : injected,
                 std::string("an upstream message was dropped: tag ") + m.tag + " at " + std::to_string(m.begin) +
                     streams);
    }
  }
  if (bad_up != SIZE_MAX)
    for (std::size_t k = bad_up + 5; k < o.upstream_forwarded.size(); ++k)
      FUZZ_CHECK(!o.upstream_forwarded[k], "upstream bytes after an impossible length reached the client" + streams);

  // ---- the boundary rule: local answers between whole messages ----
  std::size_t bad_client = 0;
  const auto to_client = frame_all(o.to_client, bad_client);
  FUZZ_CHECK(bad_client == SIZE_MAX, "the client got a message with an impossible length" + streams);
  std::vector<std::uint8_t> boundary(o.to_client.size() + 1, 0);
  boundary[0] = 1;
  for (const auto& m : to_client)
    if (!m.partial) boundary[m.end] = 1;
  for (auto [b, e] : o.owned_client_runs)
    FUZZ_CHECK(boundary[b] && boundary[e], "a local answer landed inside a message the client receives, bytes " +
                                               std::to_string(b) + "-" + std::to_string(e) + " of " +
                                               printable(o.to_client, 2000) + streams);
}

const char* ending_name(Relay::Ending e) {
  switch (e) {
    case Relay::Ending::none: return "none";
    case Relay::Ending::client_terminated: return "client_terminated";
    case Relay::Ending::client_closed: return "client_closed";
    case Relay::Ending::upstream_closed: return "upstream_closed";
    case Relay::Ending::client_protocol_violation: return "client_protocol_violation";
    case Relay::Ending::upstream_protocol_violation: return "upstream_protocol_violation";
    case Relay::Ending::ended: return "ended";
  }
  return "?";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : " | ") + s;
  return out.empty() ? "(none)" : out;
}

void check_same(const Observed& a, const Observed& b, const char* how) {
  auto show = [&] {
    return std::string("fed ") + how + ":\nto upstream " + printable(a.to_upstream, 1500) + "\n         vs " +
           printable(b.to_upstream, 1500) + "\nto client   " + printable(a.to_client, 1500) + "\n         vs " +
           printable(b.to_client, 1500) + "\nending " + ending_name(a.ending) + " vs " + ending_name(b.ending) +
           "\nstatements run " + join(a.requests) + "\n            vs " + join(b.requests) +
           "\nclient stream   " + printable(a.client_stream, 1500) + "\nupstream stream " +
           printable(a.upstream_stream, 1500);
  };
  FUZZ_CHECK(a.to_upstream == b.to_upstream, "what goes upstream depends on how the reads were cut; " + show());
  if (a.ending == Relay::Ending::upstream_protocol_violation && b.ending == a.ending) {
    // The header with the impossible length: the bytes of it that arrived in
    // earlier reads were passed on before its length was known. The session
    // ends either way; they are all that may differ.
    const Bytes& shorter = a.to_client.size() <= b.to_client.size() ? a.to_client : b.to_client;
    const Bytes& longer = a.to_client.size() <= b.to_client.size() ? b.to_client : a.to_client;
    FUZZ_CHECK(longer.size() - shorter.size() < 5 && std::equal(shorter.begin(), shorter.end(), longer.begin()),
               "what the client gets depends on how the reads were cut; " + show());
  } else {
    FUZZ_CHECK(a.to_client == b.to_client, "what the client gets depends on how the reads were cut; " + show());
  }
  if (a.finished && b.finished && a.requests != b.requests) {
    // A session that ended in the read that made a request drops it before
    // the driver could take it (the statement never runs): only the last one
    // may be missing.
    const auto& fewer = a.requests.size() < b.requests.size() ? a.requests : b.requests;
    const auto& more = a.requests.size() < b.requests.size() ? b.requests : a.requests;
    FUZZ_CHECK(more.size() == fewer.size() + 1 && std::equal(fewer.begin(), fewer.end(), more.begin()),
               "the statements run depend on how the reads were cut; " + show());
  } else {
    FUZZ_CHECK(a.requests == b.requests, "the statements run depend on how the reads were cut; " + show());
  }
  FUZZ_CHECK(a.finished == b.finished && a.ending == b.ending, "the ending depends on how the reads were cut; " + show());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Config cfg = decode_options(data[0]);
  const auto records = decode_records(data + 1, size - 1);
  const Observed given = run(cfg, records, Split::as_given);
  check(cfg, given);
  if (!cfg.limits_reachable) {
    check_same(given, run(cfg, records, Split::bytewise), "byte by byte");
    check_same(given, run(cfg, records, Split::merged), "with consecutive reads merged");
  }
  return 0;
}

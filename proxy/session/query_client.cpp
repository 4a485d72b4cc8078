// One-query extended-protocol client state machine (see query_client.hpp).
#include "proxy/session/query_client.hpp"

#include <cstdint>

namespace tokengate::session {

using namespace tokengate::protocol;

namespace {

std::string tag_name(char tag) {
  std::string s = "'";
  s += tag;
  s += "'";
  return s;
}

}  // namespace

QueryClient::QueryClient(std::string sql, std::vector<QueryParam> params)
    : sql_(std::move(sql)), params_(std::move(params)) {}

Bytes QueryClient::start() {
  Bytes out;
  if (status_ != Status::in_progress) return out;
  // Parse's query is a C string: a NUL would silently cut it short.
  if (sql_.find('\0') != std::string::npos) {
    fail("the query text contains a NUL byte");
    return out;
  }
  if (params_.size() > kMaxQueryParams) {
    fail("the query has " + std::to_string(params_.size()) + " parameters; the protocol allows " +
         std::to_string(kMaxQueryParams));
    return out;
  }

  // Parse: unnamed statement, no parameter types (the server infers them).
  MessageWriter(out, frontend_tag::Parse).cstr("").cstr(sql_).i16(0);
  {
    // Bind: unnamed portal and statement; no parameter format codes (all
    // text); the values; no result format codes (all text).
    MessageWriter bind(out, frontend_tag::Bind);
    bind.cstr("").cstr("").i16(0).i16(std::int16_t(std::uint16_t(params_.size())));
    for (const auto& p : params_) {
      if (!p) {
        bind.i32(-1);
      } else {
        bind.i32(std::int32_t(p->size())).raw(*p);
      }
    }
    bind.i16(0);
  }
  MessageWriter(out, frontend_tag::Describe).u8('P').cstr("");
  MessageWriter(out, frontend_tag::Execute).cstr("").i32(0);  // 0: all rows
  { MessageWriter sync(out, frontend_tag::Sync); }
  return out;
}

QueryClient::Status QueryClient::fail(std::string reason) {
  state_ = State::finished;
  status_ = Status::failed;
  failure_reason_ = std::move(reason);
  return status_;
}

QueryClient::Status QueryClient::on_message(const Frame& frame) {
  if (state_ == State::finished) {
    if (status_ == Status::failed) return status_;
    return fail("message " + tag_name(frame.tag) + " after ReadyForQuery");
  }

  // Asynchronous messages may arrive at any time (protocol "Asynchronous
  // Operations"); a control query has no use for them.
  switch (frame.tag) {
    case backend_tag::NoticeResponse:
    case backend_tag::ParameterStatus:
    case backend_tag::NotificationResponse:
      return status_;
    case backend_tag::ErrorResponse: {
      auto fields = ErrorFields::parse(frame.body);
      if (!fields) return fail("malformed ErrorResponse from upstream");
      // The first error is the cause; an error at implicit commit (after
      // CommandComplete) still makes the query fail.
      if (!result_.error) result_.error = std::move(*fields);
      result_.rows.clear();
      result_.command_tag.clear();
      state_ = State::await_ready;  // the server skips to Sync, then answers it
      return status_;
    }
    case backend_tag::ReadyForQuery: {
      if (state_ != State::await_ready) return fail("ReadyForQuery before the query completed");
      auto rfq = ReadyForQuery::parse(frame.body);
      if (!rfq) return fail("malformed ReadyForQuery from upstream");
      result_.tx_status = rfq->status;
      state_ = State::finished;
      status_ = Status::done;
      return status_;
    }
    case backend_tag::CopyInResponse:
    case backend_tag::CopyOutResponse:
    case backend_tag::CopyBothResponse:
      // Copy-in would wait for data forever (Sync is ignored in copy mode).
      return fail("COPY is not supported on a control connection");
    default:
      break;
  }

  auto unexpected = [&](const char* waiting_for) {
    return fail("unexpected message " + tag_name(frame.tag) + " from upstream while waiting for " +
                waiting_for);
  };
  switch (state_) {
    case State::await_parse:
      if (frame.tag != backend_tag::ParseComplete) return unexpected("ParseComplete");
      if (!frame.body.empty()) return fail("malformed ParseComplete from upstream");
      state_ = State::await_bind;
      return status_;
    case State::await_bind:
      if (frame.tag != backend_tag::BindComplete) return unexpected("BindComplete");
      if (!frame.body.empty()) return fail("malformed BindComplete from upstream");
      state_ = State::await_describe;
      return status_;
    case State::await_describe:
      if (frame.tag == backend_tag::NoData) {
        if (!frame.body.empty()) return fail("malformed NoData from upstream");
        state_ = State::await_rows;
        return status_;
      }
      if (frame.tag == backend_tag::RowDescription) return on_row_description(frame);
      return unexpected("RowDescription or NoData");
    case State::await_rows:
      if (frame.tag == backend_tag::DataRow) return on_row(frame);
      if (frame.tag == backend_tag::CommandComplete) {
        BodyReader r(frame.body);
        auto tag = r.cstr();
        if (!tag || !r.at_end()) return fail("malformed CommandComplete from upstream");
        result_.command_tag = std::string(*tag);
        state_ = State::await_ready;
        return status_;
      }
      if (frame.tag == backend_tag::EmptyQueryResponse) {
        if (!frame.body.empty()) return fail("malformed EmptyQueryResponse from upstream");
        state_ = State::await_ready;
        return status_;
      }
      return unexpected("DataRow or CommandComplete");
    case State::await_ready:
      return unexpected("ReadyForQuery");
    case State::finished:
      break;
  }
  return fail("internal error: no state");
}

QueryClient::Status QueryClient::on_row_description(const Frame& frame) {
  BodyReader r(frame.body);
  auto count = r.i16();
  if (!count || *count < 0) return fail("malformed RowDescription from upstream");
  std::vector<std::string> columns;
  columns.reserve(std::size_t(*count));
  for (int i = 0; i < *count; ++i) {
    auto name = r.cstr();
    // table oid, column number, type oid, type size, type modifier, format
    auto table = r.i32();
    auto attnum = r.i16();
    auto type = r.i32();
    auto typlen = r.i16();
    auto typmod = r.i32();
    auto format = r.i16();
    if (!name || !table || !attnum || !type || !typlen || !typmod || !format)
      return fail("malformed RowDescription from upstream");
    if (*format != 0) return fail("upstream sent a binary column although text was requested");
    columns.emplace_back(*name);
  }
  if (!r.at_end()) return fail("malformed RowDescription from upstream");
  result_.columns = std::move(columns);
  state_ = State::await_rows;
  return status_;
}

QueryClient::Status QueryClient::on_row(const Frame& frame) {
  BodyReader r(frame.body);
  auto count = r.i16();
  if (!count || *count < 0 || std::size_t(*count) != result_.columns.size())
    return fail("DataRow from upstream does not match its RowDescription");
  QueryRow row;
  row.reserve(std::size_t(*count));
  for (int i = 0; i < *count; ++i) {
    auto len = r.i32();
    if (!len || *len < -1) return fail("malformed DataRow from upstream");
    if (*len == -1) {
      row.emplace_back(std::nullopt);
      continue;
    }
    auto bytes = r.bytes(std::size_t(*len));
    if (!bytes) return fail("malformed DataRow from upstream");
    row.emplace_back(std::string(as_chars(*bytes)));
  }
  if (!r.at_end()) return fail("malformed DataRow from upstream");
  result_bytes_ += frame.body.size();
  if (result_bytes_ > kMaxQueryResultBytes)
    return fail("the query result exceeds " + std::to_string(kMaxQueryResultBytes) + " bytes");
  result_.rows.push_back(std::move(row));
  return status_;
}

}  // namespace tokengate::session

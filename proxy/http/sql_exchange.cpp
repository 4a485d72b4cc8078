// One SQL-over-HTTP statement on an upstream connection (see sql_exchange.hpp).
#include "proxy/http/sql_exchange.hpp"

namespace tokengate::http {

using namespace tokengate::protocol;

namespace {

std::string tag_name(char tag) { return std::string("'") + tag + "'"; }

// The words of PostgreSQL's own refusal, with our reason after "failed:".
constexpr std::string_view kCopyInRefusal = "COPY FROM STDIN is not supported over HTTP";

}  // namespace

Bytes SqlExchange::start(const std::string& text, const std::vector<std::optional<std::string>>& params) {
  Bytes out;
  if (text.find('\0') != std::string::npos) {
    fail("the statement holds a NUL byte");
    return out;
  }
  if (params.size() > kMaxSqlParams) {
    fail("the statement has more than " + std::to_string(kMaxSqlParams) + " parameters");
    return out;
  }
  if (writer_ != nullptr) writer_->begin_result(array_mode_, raw_);
  // Parse: unnamed statement, no parameter types (the server infers them).
  MessageWriter(out, frontend_tag::Parse).cstr("").cstr(text).i16(0);
  {
    // Bind: all parameters and all results in text format.
    MessageWriter bind(out, frontend_tag::Bind);
    bind.cstr("").cstr("").i16(0).i16(std::int16_t(std::uint16_t(params.size())));
    for (const auto& p : params) {
      if (!p) bind.i32(-1);
      else bind.i32(std::int32_t(p->size())).raw(*p);
    }
    bind.i16(0);
  }
  MessageWriter(out, frontend_tag::Describe).u8('P').cstr("");
  MessageWriter(out, frontend_tag::Execute).cstr("").i32(0);  // 0: every row
  { MessageWriter sync(out, frontend_tag::Sync); }
  return out;
}

SqlExchange::Step SqlExchange::fail(std::string reason) {
  state_ = State::finished;
  status_ = Status::failed;
  failure_reason_ = std::move(reason);
  return {status_, {}};
}

void SqlExchange::refuse(std::string message) {
  if (error_) return;
  ErrorFields f;
  f.fields = {{'S', "ERROR"}, {'V', "ERROR"}, {'C', "0A000"}, {'M', std::move(message)}};
  error_ = std::move(f);
}

SqlExchange::Step SqlExchange::on_message(const Frame& frame) {
  if (state_ == State::finished) {
    if (status_ == Status::failed) return {status_, {}};
    return fail("message " + tag_name(frame.tag) + " after ReadyForQuery");
  }

  // Asynchronous messages may come at any time ("Asynchronous Operations");
  // a statement's answer has no place for them.
  switch (frame.tag) {
    case backend_tag::NoticeResponse:
    case backend_tag::ParameterStatus:
    case backend_tag::NotificationResponse:
      return {status_, {}};
    case backend_tag::ErrorResponse: {
      auto fields = ErrorFields::parse(frame.body);
      if (!fields) return fail("malformed ErrorResponse from upstream");
      const auto severity = fields->severity();
      if (severity == "FATAL" || severity == "PANIC")
        return fail("upstream ended the connection: " + std::string(fields->sqlstate()) + " " +
                    std::string(fields->message()));
      // The first error is the answer (a refused COPY stays the reason).
      if (!error_) error_ = std::move(*fields);
      state_ = State::await_ready;  // the server skips to Sync, then answers it
      return {status_, {}};
    }
    case backend_tag::ReadyForQuery: {
      if (state_ != State::await_ready) return fail("ReadyForQuery before the statement completed");
      auto rfq = ReadyForQuery::parse(frame.body);
      if (!rfq) return fail("malformed ReadyForQuery from upstream");
      tx_status_ = rfq->status;
      state_ = State::finished;
      status_ = Status::done;
      return {status_, {}};
    }
    default:
      break;
  }

  auto unexpected = [&](const char* waiting_for) {
    return fail("unexpected message " + tag_name(frame.tag) + " from upstream while waiting for " + waiting_for);
  };
  switch (state_) {
    case State::await_parse:
      if (frame.tag != backend_tag::ParseComplete || !frame.body.empty()) return unexpected("ParseComplete");
      state_ = State::await_bind;
      return {status_, {}};
    case State::await_bind:
      if (frame.tag != backend_tag::BindComplete || !frame.body.empty()) return unexpected("BindComplete");
      state_ = State::await_describe;
      return {status_, {}};
    case State::await_describe:
      if (frame.tag == backend_tag::NoData && frame.body.empty()) {
        if (writer_ != nullptr) writer_->fields({});
        columns_ = 0;
        state_ = State::await_rows;
        return {status_, {}};
      }
      if (frame.tag == backend_tag::RowDescription) return on_row_description(frame);
      return unexpected("RowDescription or NoData");
    case State::await_rows:
      switch (frame.tag) {
        case backend_tag::DataRow: return on_row(frame);
        case backend_tag::CommandComplete: {
          BodyReader r(frame.body);
          auto tag = r.cstr();
          if (!tag || !r.at_end()) return fail("malformed CommandComplete from upstream");
          if (writer_ != nullptr) writer_->end_result(*tag);
          state_ = State::await_ready;
          return {status_, {}};
        }
        case backend_tag::EmptyQueryResponse:
          if (!frame.body.empty()) return fail("malformed EmptyQueryResponse from upstream");
          if (writer_ != nullptr) writer_->end_result("");
          state_ = State::await_ready;
          return {status_, {}};
        case backend_tag::CopyOutResponse:
          // COPY … TO STDOUT: nothing to answer it with. Its data is dropped
          // as it streams and the statement reported as refused.
          refuse("COPY TO STDOUT is not supported over HTTP");
          state_ = State::copy_out;
          return {status_, {}};
        case backend_tag::CopyInResponse: {
          // COPY … FROM STDIN: the server ignores the Sync we sent while it
          // waits for data; CopyFail ends the COPY with an error, and a new
          // Sync ends the skipping that follows.
          Step step;
          MessageWriter(step.to_upstream, frontend_tag::CopyFail).cstr(kCopyInRefusal);
          { MessageWriter sync(step.to_upstream, frontend_tag::Sync); }
          state_ = State::copy_in;
          return step;
        }
        default: return unexpected("DataRow or CommandComplete");
      }
    case State::copy_out:
      if (frame.tag == backend_tag::CopyData) return {status_, {}};
      if (frame.tag == backend_tag::CopyDone) return {status_, {}};
      if (frame.tag == backend_tag::CommandComplete) {
        state_ = State::await_ready;
        return {status_, {}};
      }
      return unexpected("CopyData or CopyDone");
    case State::copy_in:
      return unexpected("ErrorResponse after CopyFail");
    case State::await_ready:
      return unexpected("ReadyForQuery");
    case State::finished:
      break;
  }
  return fail("internal error: no state");
}

SqlExchange::Step SqlExchange::on_row_description(const Frame& frame) {
  BodyReader r(frame.body);
  auto count = r.i16();
  if (!count || *count < 0) return fail("malformed RowDescription from upstream");
  std::vector<FieldDescription> fields;
  fields.reserve(std::size_t(*count));
  for (int i = 0; i < *count; ++i) {
    auto name = r.cstr();
    auto table = r.i32();
    auto column = r.i16();
    auto type = r.i32();
    auto size = r.i16();
    auto modifier = r.i32();
    auto format = r.i16();
    if (!name || !table || !column || !type || !size || !modifier || !format)
      return fail("malformed RowDescription from upstream");
    if (*format != 0) return fail("upstream described a binary column although text was asked for");
    fields.push_back({std::string(*name), std::uint32_t(*table), *column, std::uint32_t(*type), *size, *modifier});
  }
  if (!r.at_end()) return fail("malformed RowDescription from upstream");
  columns_ = fields.size();
  if (writer_ != nullptr) writer_->fields(fields);
  state_ = State::await_rows;
  return {status_, {}};
}

SqlExchange::Step SqlExchange::on_row(const Frame& frame) {
  BodyReader r(frame.body);
  auto count = r.i16();
  if (!count || *count < 0 || std::size_t(*count) != columns_)
    return fail("DataRow from upstream does not match its RowDescription");
  values_.clear();
  for (int i = 0; i < *count; ++i) {
    auto len = r.i32();
    if (!len || *len < -1) return fail("malformed DataRow from upstream");
    if (*len == -1) {
      values_.emplace_back(std::nullopt);
      continue;
    }
    auto bytes = r.bytes(std::size_t(*len));
    if (!bytes) return fail("malformed DataRow from upstream");
    values_.emplace_back(as_chars(*bytes));
  }
  if (!r.at_end()) return fail("malformed DataRow from upstream");
  if (writer_ != nullptr && !writer_->row(values_)) {
    too_large_ = true;
    return fail("the result is larger than " + std::to_string(writer_->max_bytes()) + " bytes");
  }
  return {status_, {}};
}

}  // namespace tokengate::http

// Upstream login state machine (see upstream_login.hpp).
#include "proxy/session/upstream_login.hpp"

#include <algorithm>

#include "proxy/auth/scram.hpp"

namespace tokengate::session {

using namespace tokengate::protocol;

void append_frame(Bytes& out, const Frame& frame) {
  MessageWriter(out, frame.tag).raw(frame.body);
}

UpstreamLogin::UpstreamLogin(StartupMessage startup, std::optional<std::string> password,
                             BackendKeyData client_key)
    : startup_(std::move(startup)), password_(std::move(password)), client_key_(client_key) {}
UpstreamLogin::~UpstreamLogin() = default;
UpstreamLogin::UpstreamLogin(UpstreamLogin&&) noexcept = default;
UpstreamLogin& UpstreamLogin::operator=(UpstreamLogin&&) noexcept = default;

Bytes UpstreamLogin::start() const {
  Bytes out;
  startup_.serialize(out);
  return out;
}

UpstreamLogin::Step UpstreamLogin::fail(Step step, std::string sqlstate, std::string message) {
  state_ = State::finished;
  step.status = Status::failed;
  failure_reason_ = message;
  ErrorResponse::make("FATAL", std::move(sqlstate), std::move(message)).serialize(step.to_client);
  return step;
}

UpstreamLogin::Step UpstreamLogin::on_message(const Frame& frame) {
  Step step;
  if (state_ == State::finished) return fail(std::move(step), "08P01", "upstream login already finished");

  switch (frame.tag) {
    case backend_tag::ErrorResponse: {
      // Upstream errors reach the client unchanged (same SQLSTATE and text);
      // during login every error ends the connection.
      append_frame(step.to_client, frame);
      auto fields = ErrorFields::parse(frame.body);
      failure_reason_ = fields ? std::string(fields->sqlstate()) + " " + std::string(fields->message())
                               : "malformed ErrorResponse from upstream";
      state_ = State::finished;
      step.status = Status::failed;
      return step;
    }
    case backend_tag::NoticeResponse:
    case backend_tag::NegotiateProtocolVersion:
      append_frame(step.to_client, frame);
      return step;
    default:
      break;
  }

  if (state_ == State::await_auth) {
    if (frame.tag != backend_tag::Authentication)
      return fail(std::move(step), "08P01",
                  std::string("unexpected message type '") + frame.tag + "' from upstream during authentication");
    return on_auth(frame);
  }

  // await_ready
  switch (frame.tag) {
    case backend_tag::ParameterStatus:
      append_frame(step.to_client, frame);
      return step;
    case backend_tag::BackendKeyData: {
      auto key = BackendKeyData::parse(frame.body);
      if (!key) return fail(std::move(step), "08P01", "malformed BackendKeyData from upstream");
      upstream_key_ = *key;
      // The client sees the backend's real process ID (pg_terminate_backend,
      // pg_stat_activity and NOTIFY need it) with tokengate's own secret.
      client_key_.process_id = key->process_id;
      client_key_.serialize(step.to_client);
      return step;
    }
    case backend_tag::ReadyForQuery: {
      auto rfq = ReadyForQuery::parse(frame.body);
      if (!rfq) return fail(std::move(step), "08P01", "malformed ReadyForQuery from upstream");
      tx_status_ = rfq->status;
      append_frame(step.to_client, frame);
      state_ = State::finished;
      step.status = Status::done;
      return step;
    }
    default:
      return fail(std::move(step), "08P01",
                  std::string("unexpected message type '") + frame.tag + "' from upstream after authentication");
  }
}

UpstreamLogin::Step UpstreamLogin::on_auth(const Frame& frame) {
  Step step;
  auto req = AuthenticationRequest::parse(frame.body);
  if (!req) return fail(std::move(step), "08P01", "malformed authentication request from upstream");

  auto need_password = [&]() -> bool { return password_.has_value(); };
  switch (req->code) {
    case auth_code::Ok:
      append_frame(step.to_client, frame);
      state_ = State::await_ready;
      return step;
    case auth_code::CleartextPassword:
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      PasswordMessage{*password_}.serialize(step.to_upstream);
      return step;
    case auth_code::MD5Password: {
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      const std::string* user = startup_.find("user");
      PasswordMessage{auth::md5_password_response(user ? *user : "", *password_, req->md5_salt)}
          .serialize(step.to_upstream);
      return step;
    }
    case auth_code::SASL: {
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      // Only plain SCRAM-SHA-256: channel binding cannot work through a proxy
      // that terminates TLS itself.
      if (std::find(req->sasl_mechanisms.begin(), req->sasl_mechanisms.end(), "SCRAM-SHA-256") ==
          req->sasl_mechanisms.end())
        return fail(std::move(step), "28000", "upstream offers no SASL mechanism tokengate supports");
      scram_ = std::make_unique<auth::ScramClient>(*password_);
      SASLInitialResponse{"SCRAM-SHA-256", scram_->client_first()}.serialize(step.to_upstream);
      return step;
    }
    case auth_code::SASLContinue: {
      if (!scram_) return fail(std::move(step), "08P01", "unexpected SASL continue from upstream");
      auto final_msg = scram_->client_final(req->sasl_data);
      if (!final_msg) return fail(std::move(step), "08P01", "invalid SCRAM server-first-message from upstream");
      SASLResponse{*final_msg}.serialize(step.to_upstream);
      return step;
    }
    case auth_code::SASLFinal:
      if (!scram_ || !scram_->verify_server_final(req->sasl_data))
        return fail(std::move(step), "08P01", "upstream SCRAM server signature did not verify");
      return step;
    default:
      return fail(std::move(step), "28000",
                  "upstream requested authentication method " + std::to_string(req->code) +
                      ", which tokengate does not support");
  }
}

}  // namespace tokengate::session

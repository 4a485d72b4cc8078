// Upstream login state machine (see upstream_login.hpp).
#include "proxy/session/upstream_login.hpp"

#include <algorithm>

#include "proxy/auth/scram.hpp"
#include "proxy/auth/secret.hpp"

namespace tokengate::session {

using namespace tokengate::protocol;

void append_frame(Bytes& out, const Frame& frame) {
  MessageWriter(out, frame.tag).raw(frame.body);
}

std::optional<UpstreamAuthMethods> UpstreamAuthMethods::parse(std::string_view list, std::string& error) {
  UpstreamAuthMethods m;
  bool any = false;
  while (true) {
    const auto comma = list.find(',');
    auto item = list.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == "none") m.none = true;
    else if (item == "password") m.password = true;
    else if (item == "md5") m.md5 = true;
    else if (item == "scram-sha-256") m.scram = true;
    else {
      error = "unknown authentication method \"" + std::string(item) +
              "\" (expected none, password, md5 or scram-sha-256, comma-separated)";
      return std::nullopt;
    }
    any = true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  if (!any) return std::nullopt;
  return m;
}

std::string UpstreamAuthMethods::to_string() const {
  std::string out;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!out.empty()) out += ',';
    out += name;
  };
  add(none, "none");
  add(password, "password");
  add(md5, "md5");
  add(scram, "scram-sha-256");
  return out;
}

UpstreamLogin::UpstreamLogin(StartupMessage startup, std::optional<auth::SecretString> password,
                             BackendKeyData client_key, UpstreamAuthMethods allowed)
    : startup_(std::move(startup)), password_(std::move(password)), allowed_(allowed), client_key_(client_key) {}

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

UpstreamLogin::Step UpstreamLogin::refuse_method(Step step, std::string_view method) {
  return fail(std::move(step), "28000",
              "the upstream server asked for " + std::string(method) +
                  ", which tokengate does not answer (upstream.require_auth = " + allowed_.to_string() + ")");
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
  if (req->code != auth_code::Ok) asked_ = true;
  switch (req->code) {
    case auth_code::Ok:
      // Without a request at all the upstream trusts us: allowed only with
      // "none". After SCRAM, only once the server proved it knows the
      // verifier (an impostor could skip SASLFinal and say Ok).
      if (!asked_ && !allowed_.none) return refuse_method(std::move(step), "no authentication");
      if (scram_ && !scram_verified_)
        return fail(std::move(step), "08P01", "upstream ended SCRAM authentication without proving its identity");
      append_frame(step.to_client, frame);
      state_ = State::await_ready;
      return step;
    case auth_code::CleartextPassword: {
      if (!allowed_.password) return refuse_method(std::move(step), "a cleartext password");
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      MessageWriter(step.to_upstream, frontend_tag::PasswordMessage).cstr(password_->view());
      return step;
    }
    case auth_code::MD5Password: {
      if (!allowed_.md5) return refuse_method(std::move(step), "an MD5 password");
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      const std::string* user = startup_.find("user");
      std::string answer = auth::md5_password_response(user ? *user : "", password_->view(), req->md5_salt);
      MessageWriter(step.to_upstream, frontend_tag::PasswordMessage).cstr(answer);
      auth::wipe(answer);
      return step;
    }
    case auth_code::SASL: {
      if (!allowed_.scram) return refuse_method(std::move(step), "SCRAM-SHA-256");
      if (!need_password())
        return fail(std::move(step), "28000", "upstream asked for a password and none is configured");
      // Only plain SCRAM-SHA-256: channel binding cannot work through a proxy
      // that terminates TLS itself.
      if (std::find(req->sasl_mechanisms.begin(), req->sasl_mechanisms.end(), "SCRAM-SHA-256") ==
          req->sasl_mechanisms.end())
        return fail(std::move(step), "28000", "upstream offers no SASL mechanism tokengate supports");
      scram_ = std::make_unique<auth::ScramClient>(password_->view());
      SASLInitialResponse{"SCRAM-SHA-256", scram_->client_first()}.serialize(step.to_upstream);
      return step;
    }
    case auth_code::SASLContinue: {
      if (!scram_) return fail(std::move(step), "08P01", "unexpected SASL continue from upstream");
      auto iterations = auth::scram_iterations(req->sasl_data);
      if (iterations && *iterations > allowed_.max_scram_iterations)
        return fail(std::move(step), "28000",
                    "the upstream server demands " + std::to_string(*iterations) +
                        " SCRAM iterations, more than upstream.max_scram_iterations (" +
                        std::to_string(allowed_.max_scram_iterations) + ")");
      auto final_msg = scram_->client_final(req->sasl_data, allowed_.max_scram_iterations);
      if (!final_msg) return fail(std::move(step), "08P01", "invalid SCRAM server-first-message from upstream");
      SASLResponse{*final_msg}.serialize(step.to_upstream);
      return step;
    }
    case auth_code::SASLFinal:
      if (!scram_ || !scram_->verify_server_final(req->sasl_data))
        return fail(std::move(step), "08P01", "upstream SCRAM server signature did not verify");
      scram_verified_ = true;
      return step;
    default:
      return fail(std::move(step), "28000",
                  "upstream requested authentication method " + std::to_string(req->code) +
                      ", which tokengate does not support");
  }
}

}  // namespace tokengate::session

// TLS contexts, the client and upstream handshakes, and the TLS settings
// (see tls.hpp). OpenSSL is configured here and nowhere else.
#include "proxy/net/tls.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cstdint>

#include "proxy/net/ssl_stream.hpp"

namespace tokengate::net {

namespace ssl = asio::ssl;

namespace {

// Mozilla's "intermediate" configuration (server-side TLS guidelines v5.7):
// TLS 1.2 with forward-secret AEAD suites only, and TLS 1.3 with OpenSSL's
// default suites (all three are AEAD). The client's order is honoured, as
// the guidelines advise when every offered suite is strong.
constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
constexpr const char* kTls13Suites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* kGroups = "X25519:prime256v1:secp384r1";

// SSLRequest: length 8, then the request code 1234.5679 (80877103).
constexpr std::array<std::uint8_t, 8> kSslRequest = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};

// PostgreSQL 17 names its protocol in ALPN; libpq 17 offers it.
constexpr unsigned char kAlpnPostgresql[] = {10, 'p', 'o', 's', 't', 'g', 'r', 'e', 's', 'q', 'l'};

// OpenSSL's error queue as one line ("" when empty), emptying it.
std::string openssl_errors() {
  std::string out;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    const char* reason = ERR_reason_error_string(e);
    out += reason ? reason : buf;
  }
  return out.empty() ? "unknown OpenSSL error" : out;
}

// An encrypted key file would make OpenSSL prompt on the terminal; refuse
// instead (the load then fails with a "bad decrypt"-style reason).
int no_passphrase(char*, int, int, void*) { return 0; }

int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned int inlen,
                void*) {
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kAlpnPostgresql, sizeof kAlpnPostgresql, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;  // another protocol, or none: carry on without ALPN
}

// What both sides share: TLS 1.2+, no compression (CRIME), no renegotiation
// (OpenSSL 3 already refuses client-initiated renegotiation by default).
bool harden(SSL_CTX* h, std::string& error) {
  SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
  SSL_CTX_set_options(h, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_set_cipher_list(h, kTls12Ciphers) != 1 || SSL_CTX_set_ciphersuites(h, kTls13Suites) != 1 ||
      SSL_CTX_set1_groups_list(h, kGroups) != 1) {
    error = "cannot configure TLS ciphers: " + openssl_errors();
    return false;
  }
  return true;
}

std::shared_ptr<ssl::context> make_server_context(const std::string& cert, const std::string& key,
                                                  std::string& error) {
  ERR_clear_error();
  std::shared_ptr<ssl::context> ctx;
  try {
    ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  } catch (const boost::system::system_error& e) {
    error = std::string("cannot create a TLS context: ") + e.what();
    return nullptr;
  }
  SSL_CTX* h = ctx->native_handle();
  if (!harden(h, error)) return nullptr;
  SSL_CTX_set_dh_auto(h, 1);  // DHE-RSA suites: RFC 7919 groups sized to the key
  // Tickets and the session cache would let a client resume with the
  // certificate of before a reload; PostgreSQL disables both too.
  SSL_CTX_set_options(h, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(h, 0);
  SSL_CTX_set_session_cache_mode(h, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(h, SSL_VERIFY_NONE, nullptr);  // clients log in with passwords, not certificates
  SSL_CTX_set_alpn_select_cb(h, select_alpn, nullptr);
  SSL_CTX_set_default_passwd_cb(h, no_passphrase);

  if (SSL_CTX_use_certificate_chain_file(h, cert.c_str()) != 1) {
    error = "cannot load TLS certificate chain " + cert + ": " + openssl_errors();
    return nullptr;
  }
  if (SSL_CTX_use_PrivateKey_file(h, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      ERR_clear_error();
      error = "TLS private key " + key + " does not match the certificate in " + cert;
    } else {
      error = "cannot load TLS private key " + key + ": " + openssl_errors();
    }
    return nullptr;
  }
  if (SSL_CTX_check_private_key(h) != 1) {
    error = "TLS private key " + key + " does not match the certificate in " + cert + ": " + openssl_errors();
    return nullptr;
  }
  return ctx;
}

std::shared_ptr<ssl::context> make_upstream_context(UpstreamSslMode mode, const std::string& root_cert,
                                                    std::string& error) {
  if (mode == UpstreamSslMode::disable) return nullptr;
  ERR_clear_error();
  std::shared_ptr<ssl::context> ctx;
  try {
    ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  } catch (const boost::system::system_error& e) {
    error = std::string("cannot create a TLS context: ") + e.what();
    return nullptr;
  }
  SSL_CTX* h = ctx->native_handle();
  if (!harden(h, error)) return nullptr;
  if (mode != UpstreamSslMode::verify_full) {
    // prefer/require encrypt against passive eavesdroppers only, as libpq's
    // modes of the same names do without a root certificate.
    SSL_CTX_set_verify(h, SSL_VERIFY_NONE, nullptr);
    return ctx;
  }
  SSL_CTX_set_verify(h, SSL_VERIFY_PEER, nullptr);
  const bool ok = root_cert == "system" ? SSL_CTX_set_default_verify_paths(h) == 1
                                        : SSL_CTX_load_verify_locations(h, root_cert.c_str(), nullptr) == 1;
  if (!ok) {
    error = "cannot load upstream.sslrootcert " + root_cert + ": " + openssl_errors();
    return nullptr;
  }
  return ctx;
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

// Closes a socket when a deadline passes. The socket may move (into an
// SslStream) meanwhile: the owner re-points `socket`, and clears it when done.
// Handlers of one session run on one thread (one io_context per thread), so
// no lock is needed.
struct DeadlineGuard {
  tcp::socket* socket = nullptr;
  bool fired = false;
};

// Clears the guard's socket when the coroutine leaves its scope, on every
// path (an exception too): a timer that expired already has its handler
// queued, and it must not find a socket that is gone.
struct Disarm {
  DeadlineGuard& guard;
  ~Disarm() { guard.socket = nullptr; }
};

std::shared_ptr<DeadlineGuard> arm(asio::steady_timer& timer, tcp::socket* socket) {
  auto guard = std::make_shared<DeadlineGuard>();
  guard->socket = socket;
  timer.async_wait([guard](error_code ec) {
    if (ec || !guard->socket) return;
    guard->fired = true;
    error_code ignored;
    guard->socket->close(ignored);
  });
  return guard;
}

// OpenSSL's view of a failed handshake, beyond the error code.
std::string handshake_detail(SSL* ssl) {
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) return std::string("certificate verification: ") + X509_verify_cert_error_string(v);
  return {};
}

}  // namespace

// ---- settings ----------------------------------------------------------------

std::optional<ClientTlsMode> parse_client_tls_mode(std::string_view text, std::string& error) {
  if (text == "disable") return ClientTlsMode::disable;
  if (text == "allow") return ClientTlsMode::allow;
  if (text == "require") return ClientTlsMode::require;
  error = "tls.mode: expected disable, allow or require, got '" + std::string(text) + "'";
  return std::nullopt;
}

std::optional<UpstreamSslMode> parse_upstream_sslmode(std::string_view text, std::string& error) {
  if (text == "disable") return UpstreamSslMode::disable;
  if (text == "prefer") return UpstreamSslMode::prefer;
  if (text == "require") return UpstreamSslMode::require;
  if (text == "verify-full") return UpstreamSslMode::verify_full;
  if (text == "allow" || text == "verify-ca")
    error = "upstream.sslmode: '" + std::string(text) +
            "' is not supported; use disable, prefer, require or verify-full";
  else
    error = "upstream.sslmode: expected disable, prefer, require or verify-full, got '" + std::string(text) + "'";
  return std::nullopt;
}

std::string_view to_string(ClientTlsMode mode) noexcept {
  switch (mode) {
    case ClientTlsMode::disable: return "disable";
    case ClientTlsMode::allow: return "allow";
    case ClientTlsMode::require: return "require";
  }
  return "?";
}

std::string_view to_string(UpstreamSslMode mode) noexcept {
  switch (mode) {
    case UpstreamSslMode::disable: return "disable";
    case UpstreamSslMode::prefer: return "prefer";
    case UpstreamSslMode::require: return "require";
    case UpstreamSslMode::verify_full: return "verify-full";
  }
  return "?";
}

std::string check_tls_settings(ClientTlsMode mode, std::string_view cert_file, std::string_view key_file) {
  if (cert_file.empty() != key_file.empty())
    return cert_file.empty() ? "tls.key is set but tls.cert is not: both are needed for TLS"
                             : "tls.cert is set but tls.key is not: both are needed for TLS";
  if (mode == ClientTlsMode::require && cert_file.empty())
    return "tls.mode = require needs a certificate: set tls.cert and tls.key";
  return {};
}

std::string check_upstream_tls_settings(UpstreamSslMode mode, std::string_view root_cert_file) {
  if (mode == UpstreamSslMode::verify_full && root_cert_file.empty())
    return "upstream.sslmode = verify-full needs upstream.sslrootcert (a CA file, or \"system\")";
  return {};
}

// ---- errors ------------------------------------------------------------------

const boost::system::error_category& tls_category() noexcept {
  struct Category final : boost::system::error_category {
    const char* name() const noexcept override { return "tokengate.tls"; }
    std::string message(int ev) const override {
      switch (TlsErrc(ev)) {
        case TlsErrc::upstream_refused_ssl: return "the upstream server does not support SSL, but SSL was required";
        case TlsErrc::unexpected_ssl_response: return "the upstream server answered the SSL request with an invalid response";
        case TlsErrc::handshake_timeout: return "TLS handshake timed out";
        case TlsErrc::no_context: return "TLS is not configured";
        case TlsErrc::bad_host_name: return "invalid upstream host name for certificate verification";
      }
      return "unknown TLS error";
    }
  };
  static const Category category;
  return category;
}

// ---- TlsServerContext ----------------------------------------------------------

TlsServerContext::TlsServerContext(std::string cert, std::string key, std::shared_ptr<ssl::context> ctx)
    : cert_file_(std::move(cert)), key_file_(std::move(key)), ctx_(std::move(ctx)) {}

std::unique_ptr<TlsServerContext> TlsServerContext::load(std::string cert_chain_file, std::string private_key_file,
                                                         std::string& error) {
  auto ctx = make_server_context(cert_chain_file, private_key_file, error);
  if (!ctx) return nullptr;
  return std::unique_ptr<TlsServerContext>(
      new TlsServerContext(std::move(cert_chain_file), std::move(private_key_file), std::move(ctx)));
}

std::optional<std::string> TlsServerContext::reload() {
  std::string error;
  auto ctx = make_server_context(cert_file_, key_file_, error);
  if (!ctx) return error;
  std::shared_ptr<ssl::context> old;
  {
    std::lock_guard lock(mutex_);
    old = std::exchange(ctx_, std::move(ctx));
  }
  return std::nullopt;  // `old` is freed here, or by its last connection
}

std::shared_ptr<ssl::context> TlsServerContext::current() const {
  std::lock_guard lock(mutex_);
  return ctx_;
}

asio::awaitable<TlsResult> accept_tls(const TlsServerContext& tls, tcp::socket socket, Deadline deadline) {
  auto exec = socket.get_executor();
  auto stream = std::make_unique<SslStream<tcp::socket>>(std::move(socket), tls.current());
  asio::steady_timer timer(exec, deadline);
  auto guard = arm(timer, &stream->stream().next_layer());
  Disarm disarm{*guard};
  auto [ec] = co_await stream->stream().async_handshake(ssl::stream_base::server, use_nothrow);
  guard->socket = nullptr;
  timer.cancel();
  if (guard->fired) co_return TlsResult{make_error_code(TlsErrc::handshake_timeout), nullptr, {}};
  if (ec) {
    stream->close();
    co_return TlsResult{ec, nullptr, {}};
  }
  co_return TlsResult{{}, std::move(stream), {}};
}

// ---- UpstreamTlsContext ------------------------------------------------------------

UpstreamTlsContext::UpstreamTlsContext(UpstreamSslMode mode, std::string root_cert_file,
                                       std::shared_ptr<ssl::context> ctx)
    : mode_(mode), root_cert_file_(std::move(root_cert_file)), ctx_(std::move(ctx)) {}

std::unique_ptr<UpstreamTlsContext> UpstreamTlsContext::create(UpstreamSslMode mode, std::string root_cert_file,
                                                               std::string& error) {
  if (auto e = check_upstream_tls_settings(mode, root_cert_file); !e.empty()) {
    error = std::move(e);
    return nullptr;
  }
  auto ctx = make_upstream_context(mode, root_cert_file, error);
  if (!ctx && mode != UpstreamSslMode::disable) return nullptr;
  return std::unique_ptr<UpstreamTlsContext>(new UpstreamTlsContext(mode, std::move(root_cert_file), std::move(ctx)));
}

std::optional<std::string> UpstreamTlsContext::reload() {
  if (mode_ == UpstreamSslMode::disable) return std::nullopt;
  std::string error;
  auto ctx = make_upstream_context(mode_, root_cert_file_, error);
  if (!ctx) return error;
  std::lock_guard lock(mutex_);
  ctx_.swap(ctx);
  return std::nullopt;
}

std::shared_ptr<ssl::context> UpstreamTlsContext::current() const {
  std::lock_guard lock(mutex_);
  return ctx_;
}

asio::awaitable<TlsResult> start_upstream_tls(tcp::socket socket, const UpstreamTlsContext& tls, std::string host,
                                              Deadline deadline) {
  const UpstreamSslMode mode = tls.mode();
  if (mode == UpstreamSslMode::disable)
    co_return TlsResult{{}, std::make_unique<SocketStream<tcp::socket>>(std::move(socket)), {}};

  auto exec = socket.get_executor();
  asio::steady_timer timer(exec, deadline);
  auto guard = arm(timer, &socket);
  Disarm disarm{*guard};
  auto timed_out = [&](error_code ec) { return guard->fired ? make_error_code(TlsErrc::handshake_timeout) : ec; };

  if (auto [ec, n] = co_await asio::async_write(socket, asio::buffer(kSslRequest), use_nothrow); ec) {
    guard->socket = nullptr;
    co_return TlsResult{timed_out(ec), nullptr, {}};
  }
  // Exactly one byte: anything the server sent after it belongs to the TLS
  // handshake (reading ahead would let a man in the middle inject plaintext,
  // CVE-2021-23222).
  std::uint8_t answer = 0;
  if (auto [ec, n] = co_await asio::async_read(socket, asio::buffer(&answer, 1), use_nothrow); ec) {
    guard->socket = nullptr;
    co_return TlsResult{timed_out(ec), nullptr, {}};
  }
  if (answer == 'N') {
    guard->socket = nullptr;
    timer.cancel();
    if (mode == UpstreamSslMode::prefer)
      co_return TlsResult{{}, std::make_unique<SocketStream<tcp::socket>>(std::move(socket)), {}};
    co_return TlsResult{make_error_code(TlsErrc::upstream_refused_ssl), nullptr,
                        "upstream.sslmode is " + std::string(to_string(mode))};
  }
  if (answer != 'S') {
    guard->socket = nullptr;
    co_return TlsResult{make_error_code(TlsErrc::unexpected_ssl_response), nullptr,
                        "got byte " + std::to_string(int(answer)) +
                            (answer >= 0x20 && answer < 0x7f ? " ('" + std::string(1, char(answer)) + "')" : "")};
  }

  auto stream = std::make_unique<SslStream<tcp::socket>>(std::move(socket), tls.current());
  guard->socket = &stream->stream().next_layer();
  SSL* ssl = stream->native_handle();
  const bool ip = is_ip_literal(host);
  // SNI only for names: RFC 6066 forbids IP literals there (libpq skips them too).
  if (!ip) SSL_set_tlsext_host_name(ssl, host.c_str());
  SSL_set_alpn_protos(ssl, kAlpnPostgresql, sizeof kAlpnPostgresql);
  if (mode == UpstreamSslMode::verify_full) {
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int set = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str()) : X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    if (set != 1) {
      guard->socket = nullptr;
      stream->close();
      co_return TlsResult{make_error_code(TlsErrc::bad_host_name), nullptr,
                          "cannot check the upstream host name \"" + host + "\": " + openssl_errors()};
    }
  }
  auto [ec] = co_await stream->stream().async_handshake(ssl::stream_base::client, use_nothrow);
  guard->socket = nullptr;
  timer.cancel();
  if (guard->fired) co_return TlsResult{make_error_code(TlsErrc::handshake_timeout), nullptr, {}};
  if (ec) {
    std::string detail = handshake_detail(ssl);
    stream->close();
    co_return TlsResult{ec, nullptr, std::move(detail)};
  }
  co_return TlsResult{{}, std::move(stream), {}};
}

}  // namespace tokengate::net

// TLS for both sides of the proxy (OpenSSL through asio::ssl): the server
// context clients handshake with (reloadable on SIGHUP), the client context
// for the upstream, the SSLRequest exchange with the upstream, and the
// parsers of the TLS settings. Included only by the driver: it pulls in Asio,
// but not <boost/asio/ssl.hpp> (that stays in tls.cpp and ssl_stream.hpp).
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/net/stream.hpp"

namespace boost::asio::ssl {
class context;
}

namespace tokengate::net {

using tcp = asio::ip::tcp;
using Deadline = std::chrono::steady_clock::time_point;

// ---- settings --------------------------------------------------------------

// `tls.mode`: what tokengate answers to a client's SSLRequest.
enum class ClientTlsMode {
  disable,  // always 'N', even with a certificate configured
  allow,    // 'S' when tls.cert/tls.key are set, plain connections accepted too
  require,  // 'S'; a TCP client that logs in without TLS gets FATAL 28000
};

// `upstream.sslmode`, with libpq's meaning of each value.
enum class UpstreamSslMode {
  disable,      // no SSLRequest
  prefer,       // SSLRequest; TLS without verification if the server says 'S', plain if 'N'
  require,      // TLS without verification (as libpq's sslmode=require); 'N' is an error
  verify_full,  // TLS, chain verified against upstream.sslrootcert and the host name checked
};

// Parse the settings' text values. On failure: nullopt, and `error` says
// which setting, what was given and what is accepted (for ConfigError).
[[nodiscard]] std::optional<ClientTlsMode> parse_client_tls_mode(std::string_view text, std::string& error);
[[nodiscard]] std::optional<UpstreamSslMode> parse_upstream_sslmode(std::string_view text, std::string& error);
std::string_view to_string(ClientTlsMode mode) noexcept;
std::string_view to_string(UpstreamSslMode mode) noexcept;

// Cross-checks of the settings read together; "" when they are consistent,
// else a message for ConfigError. (`tls.mode = require` needs a certificate;
// a certificate needs its key; verify-full needs upstream.sslrootcert.)
[[nodiscard]] std::string check_tls_settings(ClientTlsMode mode, std::string_view cert_file,
                                             std::string_view key_file);
[[nodiscard]] std::string check_upstream_tls_settings(UpstreamSslMode mode, std::string_view root_cert_file);

// ---- errors ----------------------------------------------------------------

// What can go wrong around TLS besides OpenSSL's own errors (those come in
// asio's ssl category, e.g. "certificate verify failed").
enum class TlsErrc {
  upstream_refused_ssl = 1,   // the upstream answered 'N' but the mode requires TLS
  unexpected_ssl_response,    // neither 'S' nor 'N' to our SSLRequest
  handshake_timeout,          // the deadline passed during the TLS handshake
  no_context,                 // TLS requested but no certificate is loaded
  bad_host_name,              // OpenSSL would not take the upstream host name to check
};
const boost::system::error_category& tls_category() noexcept;
inline error_code make_error_code(TlsErrc e) noexcept { return {int(e), tls_category()}; }

// The outcome of a TLS set-up: the stream to use from now on, or why not.
// `detail` adds what the error code cannot say (OpenSSL's verification
// result, the byte the upstream answered); never key material.
struct TlsResult {
  error_code ec;
  std::unique_ptr<ByteStream> stream;  // null when ec is set
  std::string detail;                  // for the log; may be empty
};

// ---- client side (tokengate as a TLS server) --------------------------------

// The server certificate and settings, shared by every I/O thread. Each new
// connection takes the context current at its handshake; reload() swaps in a
// new one for later connections while live ones keep theirs (they hold a
// reference). All member functions are thread-safe.
class TlsServerContext {
 public:
  // Reads the PEM certificate chain (leaf first) and private key. On failure
  // returns null and sets `error` (which names the file and OpenSSL's reason).
  static std::unique_ptr<TlsServerContext> load(std::string cert_chain_file, std::string private_key_file,
                                                std::string& error);

  // Re-reads both files (on SIGHUP). On success later handshakes use the new
  // certificate and nullopt is returned; on failure the old context stays and
  // the reason is returned.
  [[nodiscard]] std::optional<std::string> reload();

  // The context for one new connection; keep the pointer for its lifetime.
  std::shared_ptr<boost::asio::ssl::context> current() const;

  const std::string& cert_file() const noexcept { return cert_file_; }
  const std::string& key_file() const noexcept { return key_file_; }

  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

 private:
  TlsServerContext(std::string cert, std::string key, std::shared_ptr<boost::asio::ssl::context> ctx);

  const std::string cert_file_;
  const std::string key_file_;
  mutable std::mutex mutex_;                         // guards ctx_ (the pointer, not the context)
  std::shared_ptr<boost::asio::ssl::context> ctx_;  // never null
};

// Performs the server side of the handshake on a client that sent SSLRequest
// and was answered 'S' (the driver writes the 'S'). The socket must have no
// unread plaintext buffered in the driver (see CVE-2021-23214). If the
// handshake is not done by `deadline` the socket is closed and the result is
// TlsErrc::handshake_timeout. On success the stream carries the rest of the
// session (StartupMessage first).
asio::awaitable<TlsResult> accept_tls(const TlsServerContext& tls, tcp::socket socket, Deadline deadline);

// ---- upstream side (tokengate as a TLS client) --------------------------------

// The client context for upstream connections, built once from the settings
// (so a bad CA file is reported at start, not at the first login).
class UpstreamTlsContext {
 public:
  // `root_cert_file`: PEM CA certificates for verify-full; "system" means the
  // OS trust store (as libpq's sslrootcert=system). Ignored by other modes.
  static std::unique_ptr<UpstreamTlsContext> create(UpstreamSslMode mode, std::string root_cert_file,
                                                    std::string& error);
  // Re-reads the CA file (SIGHUP); as TlsServerContext::reload().
  [[nodiscard]] std::optional<std::string> reload();

  UpstreamSslMode mode() const noexcept { return mode_; }
  std::shared_ptr<boost::asio::ssl::context> current() const;  // null for disable

  UpstreamTlsContext(const UpstreamTlsContext&) = delete;
  UpstreamTlsContext& operator=(const UpstreamTlsContext&) = delete;

 private:
  UpstreamTlsContext(UpstreamSslMode mode, std::string root_cert_file,
                     std::shared_ptr<boost::asio::ssl::context> ctx);

  const UpstreamSslMode mode_;
  const std::string root_cert_file_;
  mutable std::mutex mutex_;
  std::shared_ptr<boost::asio::ssl::context> ctx_;
};

// Negotiates encryption on a freshly connected upstream socket, before the
// StartupMessage: sends SSLRequest, reads exactly one byte, and on 'S' runs
// the TLS client handshake (SNI and host name check against `host`, which is
// a DNS name or an IP address literal, for verify-full). With mode disable it
// only wraps the socket. Returns the stream to send the StartupMessage on.
// The socket is closed when `deadline` passes first.
asio::awaitable<TlsResult> start_upstream_tls(tcp::socket socket, const UpstreamTlsContext& tls,
                                              std::string host, Deadline deadline = Deadline::max());

}  // namespace tokengate::net

template <>
struct boost::system::is_error_code_enum<tokengate::net::TlsErrc> : std::true_type {};

// TLS on both sides of the proxy over loopback: protocol versions, reload of
// the certificate, upstream SSLRequest and verify-full, and the buffered-data
// path of SslStream::wait_readable. Certificates are made at test time.
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <variant>

#include "proxy/net/ssl_stream.hpp"
#include "proxy/net/tls.hpp"

using namespace tokengate::net;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;
namespace ssl = boost::asio::ssl;
namespace fs = std::filesystem;

namespace {

// ---- certificates, made with OpenSSL's API in a private temporary directory ----

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CertFree {
  void operator()(X509* c) const { X509_free(c); }
};
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
using Cert = std::unique_ptr<X509, CertFree>;

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
  REQUIRE(ext != nullptr);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A CA when issuer is null (self-signed), else a server certificate with `san`.
Cert make_cert(EVP_PKEY* key, const std::string& cn, X509* issuer, EVP_PKEY* issuer_key, const char* san) {
  static long serial = 1;
  Cert cert(X509_new());
  X509* x = cert.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x));
  if (!issuer) {
    add_ext(x, x, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, x, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    add_ext(x, issuer, NID_ext_key_usage, "serverAuth");
    add_ext(x, issuer, NID_subject_alt_name, san);
  }
  REQUIRE(X509_sign(x, issuer ? issuer_key : key, EVP_sha256()) > 0);
  return cert;
}

void write_pem(const fs::path& path, X509* cert) {
  BIO* b = BIO_new_file(path.c_str(), "w");
  REQUIRE(b != nullptr);
  PEM_write_bio_X509(b, cert);
  BIO_free(b);
}

void write_pem(const fs::path& path, EVP_PKEY* key) {
  BIO* b = BIO_new_file(path.c_str(), "w");
  REQUIRE(b != nullptr);
  PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  BIO_free(b);
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write);
}

// ca.crt signs first.crt/.key and second.crt/.key (CN tokengate-first/-second,
// SAN localhost and 127.0.0.1); other_ca.crt signs other.crt/.key.
struct Pki {
  fs::path dir;
  Pki() {
    std::string tmpl = (fs::temp_directory_path() / "tokengate-tls-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    Key ca_key(EVP_EC_gen("P-256")), other_ca_key(EVP_EC_gen("P-256"));
    REQUIRE(ca_key);
    Cert ca = make_cert(ca_key.get(), "tokengate test CA", nullptr, nullptr, nullptr);
    Cert other_ca = make_cert(other_ca_key.get(), "tokengate other CA", nullptr, nullptr, nullptr);
    write_pem(dir / "ca.crt", ca.get());
    write_pem(dir / "other_ca.crt", other_ca.get());
    const char* san = "DNS:localhost,IP:127.0.0.1";
    for (const char* name : {"first", "second", "other"}) {
      Key key(EVP_EC_gen("P-256"));
      const bool other = std::string(name) == "other";
      Cert cert = make_cert(key.get(), std::string("tokengate-") + name, other ? other_ca.get() : ca.get(),
                            other ? other_ca_key.get() : ca_key.get(), san);
      write_pem(dir / (std::string(name) + ".crt"), cert.get());
      write_pem(dir / (std::string(name) + ".key"), key.get());
    }
  }
  ~Pki() {
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  std::string path(const char* name) const { return (dir / name).string(); }
};

// ---- harness ------------------------------------------------------------------

// Runs one test coroutine to completion (or fails after 20 s).
template <typename F>
void run_async(F&& make) {
  boost::asio::io_context io;
  bool done = false;
  std::exception_ptr error;
  boost::asio::co_spawn(io, make(), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  io.run_for(20s);
  if (error) std::rethrow_exception(error);
  REQUIRE(done);
}

tcp::acceptor listen_loopback(boost::asio::any_io_executor exec) {
  tcp::acceptor acc(exec, tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), 0));
  return acc;
}

Deadline in(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

const std::array<std::uint8_t, 8> kSslRequest = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};

// tokengate's side: accept one TCP connection and run accept_tls on it.
boost::asio::awaitable<TlsResult> accept_one(tcp::acceptor& acc, const TlsServerContext& tls,
                                             std::chrono::milliseconds timeout = 5000ms) {
  auto [ec, sock] = co_await acc.async_accept(use_nothrow);
  REQUIRE_FALSE(ec);
  co_return co_await accept_tls(tls, std::move(sock), in(timeout));
}

// A PostgreSQL-like upstream: expects SSLRequest, answers `answer`, and on
// 'S' runs the TLS server handshake with `tls`. Reports the SNI it saw.
struct UpstreamSide {
  TlsResult result;
  std::string sni;
};
boost::asio::awaitable<UpstreamSide> fake_upstream(tcp::acceptor& acc, const TlsServerContext* tls, char answer) {
  auto [ec, sock] = co_await acc.async_accept(use_nothrow);
  REQUIRE_FALSE(ec);
  std::array<std::uint8_t, 8> req{};
  auto [rec, n] = co_await boost::asio::async_read(sock, boost::asio::buffer(req), use_nothrow);
  REQUIRE_FALSE(rec);
  CHECK(req == kSslRequest);
  co_await boost::asio::async_write(sock, boost::asio::buffer(&answer, 1), use_nothrow);
  UpstreamSide out;
  if (answer != 'S') {
    out.result.stream = std::make_unique<SocketStream<tcp::socket>>(std::move(sock));
    co_return out;
  }
  out.result = co_await accept_tls(*tls, std::move(sock), in(5000ms));
  if (out.result.stream) {
    auto& s = dynamic_cast<SslStream<tcp::socket>&>(*out.result.stream);
    const char* name = SSL_get_servername(s.native_handle(), TLSEXT_NAMETYPE_host_name);
    out.sni = name ? name : "";
  }
  co_return out;
}

// A client with its own protocol-version limits, for what libpq would not do.
struct RawClient {
  error_code ec;
  std::shared_ptr<ssl::context> ctx;  // before stream: outlives it
  std::unique_ptr<ssl::stream<tcp::socket>> stream;
  int version = 0;
  std::string cipher;
  std::string peer_cn;
  std::string alpn;  // what the server selected
};
boost::asio::awaitable<RawClient> raw_client(tcp::endpoint to, int min_version, int max_version,
                                            std::string alpn = {}) {
  RawClient c;
  c.ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* h = c.ctx->native_handle();
  if (min_version < TLS1_2_VERSION) {
    // OpenSSL 3 will not even offer TLS 1.1 at its default security level.
    SSL_CTX_set_security_level(h, 0);
    SSL_CTX_set_cipher_list(h, "DEFAULT:@SECLEVEL=0");
  }
  SSL_CTX_set_min_proto_version(h, min_version);
  SSL_CTX_set_max_proto_version(h, max_version);
  SSL_CTX_set_verify(h, SSL_VERIFY_NONE, nullptr);
  if (!alpn.empty()) {
    std::string wire = std::string(1, char(alpn.size())) + alpn;
    SSL_CTX_set_alpn_protos(h, reinterpret_cast<const unsigned char*>(wire.data()), unsigned(wire.size()));
  }
  c.stream = std::make_unique<ssl::stream<tcp::socket>>(co_await boost::asio::this_coro::executor, *c.ctx);
  auto [cec] = co_await c.stream->next_layer().async_connect(to, use_nothrow);
  REQUIRE_FALSE(cec);
  auto [ec] = co_await c.stream->async_handshake(ssl::stream_base::client, use_nothrow);
  c.ec = ec;
  if (!ec) {
    SSL* ssl = c.stream->native_handle();
    c.version = SSL_version(ssl);
    c.cipher = SSL_get_cipher_name(ssl);
    X509* peer = SSL_get1_peer_certificate(ssl);
    REQUIRE(peer != nullptr);
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, cn, sizeof cn);
    c.peer_cn = cn;
    X509_free(peer);
    const unsigned char* proto = nullptr;
    unsigned int len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    c.alpn.assign(reinterpret_cast<const char*>(proto), len);
  }
  co_return c;
}

boost::asio::awaitable<RawClient> raw_client(tcp::endpoint to) {
  co_return co_await raw_client(to, TLS1_2_VERSION, TLS1_3_VERSION);
}

std::unique_ptr<TlsServerContext> load(const Pki& pki, const char* cert, const char* key) {
  std::string error;
  auto tls = TlsServerContext::load(pki.path(cert), pki.path(key), error);
  INFO(error);
  REQUIRE(tls);
  return tls;
}

std::unique_ptr<UpstreamTlsContext> upstream_ctx(UpstreamSslMode mode, std::string ca) {
  std::string error;
  auto tls = UpstreamTlsContext::create(mode, std::move(ca), error);
  INFO(error);
  REQUIRE(tls);
  return tls;
}

boost::asio::awaitable<std::string> read_exactly(ByteStream& from, std::size_t size) {
  std::string got(size, '\0');
  std::size_t have = 0;
  while (have < got.size()) {
    auto [rec, n] = co_await from.read_some(boost::asio::buffer(got.data() + have, got.size() - have));
    REQUIRE_FALSE(rec);
    have += n;
  }
  co_return got;
}

// Writes `out` on one stream and checks the other reads exactly that.
boost::asio::awaitable<void> check_echo(ByteStream& from, ByteStream& to, std::string out) {
  auto [wec, wn] = co_await from.write(boost::asio::buffer(out));
  REQUIRE_FALSE(wec);
  // Never co_await inside a Catch2 macro: its assertion state would span the suspension.
  std::string got = co_await read_exactly(to, out.size());
  CHECK(got == out);
}

const Pki& pki() {
  static Pki p;
  return p;
}

}  // namespace

// ---- client side: tokengate as the TLS server ------------------------------------

TEST_CASE("clients handshake with TLS 1.2 and 1.3 and a modern cipher") {
  auto tls = load(pki(), "first.crt", "first.key");
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    CAPTURE(version);
    run_async([&]() -> boost::asio::awaitable<void> {
      auto acc = listen_loopback(co_await boost::asio::this_coro::executor);
      auto [server, client] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint(), version, version));
      INFO(server.ec.message() << " / " << client.ec.message());
      REQUIRE_FALSE(server.ec);
      REQUIRE_FALSE(client.ec);
      CHECK(client.version == version);
      CHECK(client.peer_cn == "tokengate-first");
      if (version == TLS1_2_VERSION) {
        CHECK(client.cipher.rfind("ECDHE-", 0) == 0);
        CHECK(client.cipher.find("GCM") != std::string::npos);
      }
      CHECK(SSL_get_current_compression(client.stream->native_handle()) == nullptr);
      // The stream carries data both ways.
      std::string hello = "StartupMessage";
      co_await client.stream->async_write_some(boost::asio::buffer(hello), use_nothrow);
      std::string got = co_await read_exactly(*server.stream, hello.size());
      CHECK(got == hello);
    });
  }
}

TEST_CASE("ALPN: 'postgresql' is selected when offered, anything else is ignored") {
  auto tls = load(pki(), "first.crt", "first.key");
  for (std::string offer : {"postgresql", "http/1.1", ""}) {
    CAPTURE(offer);
    run_async([&]() -> boost::asio::awaitable<void> {
      auto acc = listen_loopback(co_await boost::asio::this_coro::executor);
      auto [server, client] =
          co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint(), TLS1_2_VERSION, TLS1_3_VERSION, offer));
      REQUIRE_FALSE(client.ec);
      CHECK(client.alpn == (offer == "postgresql" ? "postgresql" : ""));
    });
  }
}

TEST_CASE("a TLS 1.1 client is refused") {
  auto tls = load(pki(), "first.crt", "first.key");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto acc = listen_loopback(co_await boost::asio::this_coro::executor);
    auto [server, client] =
        co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint(), TLS1_1_VERSION, TLS1_1_VERSION));
    CHECK(client.ec);
    REQUIRE(server.ec);
    CHECK_FALSE(server.stream);
    INFO("server saw: " << server.ec.message());
    // The server turned the version down (not, say, a cipher mismatch).
    CHECK(ERR_GET_REASON(static_cast<unsigned long>(server.ec.value())) == SSL_R_UNSUPPORTED_PROTOCOL);
  });
}

TEST_CASE("a client that never sends ClientHello times out") {
  auto tls = load(pki(), "first.crt", "first.key");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    tcp::socket silent(exec);
    co_await silent.async_connect(acc.local_endpoint(), use_nothrow);
    auto start = std::chrono::steady_clock::now();
    auto server = co_await accept_one(acc, *tls, 200ms);
    CHECK(server.ec == make_error_code(TlsErrc::handshake_timeout));
    CHECK(std::chrono::steady_clock::now() - start < 3s);
  });
}

TEST_CASE("reload swaps the certificate for new connections; a failed reload keeps the old one") {
  // A private copy of the files, so they can be replaced and removed.
  fs::path dir = pki().dir / "reload";
  fs::create_directories(dir);
  const std::string cert = (dir / "server.crt").string(), key = (dir / "server.key").string();
  auto install = [&](const char* name) {
    fs::copy_file(pki().dir / (std::string(name) + ".crt"), cert, fs::copy_options::overwrite_existing);
    fs::copy_file(pki().dir / (std::string(name) + ".key"), key, fs::copy_options::overwrite_existing);
  };
  install("first");
  std::string error;
  auto tls = TlsServerContext::load(cert, key, error);
  REQUIRE(tls);

  auto peer_cn = [&]() {
    std::string cn;
    run_async([&]() -> boost::asio::awaitable<void> {
      auto acc = listen_loopback(co_await boost::asio::this_coro::executor);
      auto [server, client] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint()));
      REQUIRE_FALSE(client.ec);
      cn = client.peer_cn;
    });
    return cn;
  };
  CHECK(peer_cn() == "tokengate-first");
  auto before = tls->current();

  install("second");
  auto failed = tls->reload();
  INFO(failed.value_or(""));
  REQUIRE_FALSE(failed);
  CHECK(tls->current() != before);
  CHECK(peer_cn() == "tokengate-second");

  SECTION("missing key") {
    fs::remove(key);
    auto err = tls->reload();
    REQUIRE(err);
    CHECK(err->find(key) != std::string::npos);
    CHECK(peer_cn() == "tokengate-second");
  }
  SECTION("key of another certificate") {
    fs::copy_file(pki().dir / "first.crt", cert, fs::copy_options::overwrite_existing);
    fs::copy_file(pki().dir / "other.key", key, fs::copy_options::overwrite_existing);
    auto err = tls->reload();
    REQUIRE(err);
    INFO(*err);
    CHECK(err->find("does not match") != std::string::npos);
    CHECK(peer_cn() == "tokengate-second");
  }
  SECTION("not a certificate") {
    std::ofstream(cert) << "not a PEM file\n";
    auto err = tls->reload();
    REQUIRE(err);
    CHECK(err->find(cert) != std::string::npos);
    CHECK(peer_cn() == "tokengate-second");
  }
  fs::remove_all(dir);
}

TEST_CASE("loading a missing certificate is an error naming the file") {
  std::string error;
  CHECK_FALSE(TlsServerContext::load(pki().path("absent.crt"), pki().path("first.key"), error));
  CHECK(error.find("absent.crt") != std::string::npos);
  error.clear();
  CHECK_FALSE(TlsServerContext::load(pki().path("first.crt"), pki().path("absent.key"), error));
  CHECK(error.find("absent.key") != std::string::npos);
}

// ---- SslStream -------------------------------------------------------------------

TEST_CASE("wait_readable returns at once for data OpenSSL already holds") {
  auto tls = load(pki(), "first.crt", "first.key");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    auto [server, client] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint()));
    REQUIRE(server.stream);
    auto& stream = dynamic_cast<SslStream<tcp::socket>&>(*server.stream);
    boost::asio::steady_timer timer(exec);
    // Which finishes first: wait_readable (0) or a timer (1)?
    auto race = [&](std::chrono::milliseconds limit) -> boost::asio::awaitable<std::size_t> {
      timer.expires_after(limit);
      auto r = co_await (stream.wait_readable() || timer.async_wait(use_nothrow));
      co_return r.index();
    };

    // One record of 11 bytes, read 3: 8 decrypted bytes stay in OpenSSL
    // (SSL_pending) and the socket has nothing more.
    co_await boost::asio::async_write(*client.stream, boost::asio::buffer(std::string("hello world")), use_nothrow);
    char buf[64];
    auto [e1, n1] = co_await stream.read_some(boost::asio::buffer(buf, 3));
    REQUIRE(n1 == 3);
    CHECK(SSL_pending(stream.native_handle()) == 8);
    CHECK(stream.has_buffered_input());
    std::size_t winner1 = co_await race(2000ms);
    CHECK(winner1 == 0);
    auto [e2, n2] = co_await stream.read_some(boost::asio::buffer(buf));
    CHECK(std::string(buf, n2) == "lo world");

    // Nothing buffered: it waits for the socket.
    CHECK_FALSE(stream.has_buffered_input());
    std::size_t winner2 = co_await race(100ms);
    CHECK(winner2 == 1);

    // Two records that arrive together: asio reads both from the socket,
    // OpenSSL decrypts one per read, the other waits in the BIO.
    co_await boost::asio::async_write(*client.stream, boost::asio::buffer(std::string("first")), use_nothrow);
    co_await boost::asio::async_write(*client.stream, boost::asio::buffer(std::string("second")), use_nothrow);
    timer.expires_after(100ms);
    co_await timer.async_wait(use_nothrow);
    auto [e3, n3] = co_await stream.read_some(boost::asio::buffer(buf));
    REQUIRE(std::string(buf, n3) == "first");
    CHECK(SSL_pending(stream.native_handle()) == 0);             // nothing decrypted yet...
    CHECK(BIO_ctrl_pending(SSL_get_rbio(stream.native_handle())) > 0);  // ...but a record is in the BIO
    CHECK(stream.has_buffered_input());
    std::size_t winner3 = co_await race(2000ms);
    CHECK(winner3 == 0);
    auto [e4, n4] = co_await stream.read_some(boost::asio::buffer(buf));
    CHECK(std::string(buf, n4) == "second");
  });
}

TEST_CASE("shutdown_send sends close_notify and the peer can still send") {
  auto tls = load(pki(), "first.crt", "first.key");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto acc = listen_loopback(co_await boost::asio::this_coro::executor);
    auto [server, client] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint()));
    REQUIRE(server.stream);
    co_await server.stream->write(boost::asio::buffer(std::string("bye")));
    server.stream->shutdown_send();
    char buf[16];
    auto [e1, n1] = co_await boost::asio::async_read(*client.stream, boost::asio::buffer(buf, 3), use_nothrow);
    CHECK(std::string(buf, n1) == "bye");
    auto [e2, n2] = co_await client.stream->async_read_some(boost::asio::buffer(buf), use_nothrow);
    CHECK(e2 == boost::asio::error::eof);  // close_notify, not a truncated stream
    // Half-close: the other direction still works.
    co_await boost::asio::async_write(*client.stream, boost::asio::buffer(std::string("late")), use_nothrow);
    auto [e3, n3] = co_await server.stream->read_some(boost::asio::buffer(buf));
    CHECK_FALSE(e3);
    CHECK(std::string(buf, n3) == "late");
    server.stream->close();
  });
}

TEST_CASE("a stream destroyed right after shutdown_send leaves nothing dangling") {
  // The close_notify write is still in flight when the owner lets go of the
  // stream (a session ending); the write's state must outlive the object.
  auto tls = load(pki(), "first.crt", "first.key");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    auto [server, client] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint()));
    REQUIRE(server.stream);
    server.stream->shutdown_send();
    server.stream->shutdown_send();  // a second call is a no-op
    server.stream.reset();
    char buf[16];
    auto [ec, n] = co_await client.stream->async_read_some(boost::asio::buffer(buf), use_nothrow);
    CHECK(ec == boost::asio::error::eof);
    // And closing at once after shutdown_send: the pending write is aborted.
    auto [server2, client2] = co_await (accept_one(acc, *tls) && raw_client(acc.local_endpoint()));
    REQUIRE(server2.stream);
    server2.stream->shutdown_send();
    server2.stream->close();
    server2.stream.reset();
    boost::asio::steady_timer settle(exec, 50ms);
    co_await settle.async_wait(use_nothrow);
  });
}

// ---- upstream side: tokengate as the TLS client -------------------------------------

TEST_CASE("upstream verify-full accepts the right CA and host name, with SNI") {
  auto server_tls = load(pki(), "first.crt", "first.key");
  auto tls = upstream_ctx(UpstreamSslMode::verify_full, pki().path("ca.crt"));
  for (std::string host : {"localhost", "127.0.0.1"}) {
    CAPTURE(host);
    run_async([&]() -> boost::asio::awaitable<void> {
      auto exec = co_await boost::asio::this_coro::executor;
      auto acc = listen_loopback(exec);
      tcp::socket sock(exec);
      co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
      auto [up, mine] =
          co_await (fake_upstream(acc, server_tls.get(), 'S') && start_upstream_tls(std::move(sock), *tls, host));
      INFO(mine.ec.message() << " " << mine.detail);
      REQUIRE_FALSE(mine.ec);
      REQUIRE(up.result.stream);
      CHECK(up.sni == (host == "localhost" ? "localhost" : ""));  // no SNI for IP literals
      co_await check_echo(*mine.stream, *up.result.stream, "StartupMessage");
      co_await check_echo(*up.result.stream, *mine.stream, "AuthenticationOk");
    });
  }
}

TEST_CASE("upstream verify-full refuses another CA's certificate and a wrong host name") {
  struct Case {
    const char* server_cert;
    const char* server_key;
    std::string host;
    const char* expect;  // in the detail
  };
  for (const Case& c : {Case{"other.crt", "other.key", "localhost", "unable to get local issuer certificate"},
                        Case{"first.crt", "first.key", "db.example.com", "hostname mismatch"},
                        Case{"first.crt", "first.key", "127.0.0.2", "IP address mismatch"}}) {
    CAPTURE(c.server_cert, c.host);
    auto server_tls = load(pki(), c.server_cert, c.server_key);
    auto tls = upstream_ctx(UpstreamSslMode::verify_full, pki().path("ca.crt"));
    run_async([&]() -> boost::asio::awaitable<void> {
      auto exec = co_await boost::asio::this_coro::executor;
      auto acc = listen_loopback(exec);
      tcp::socket sock(exec);
      co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
      auto [up, mine] =
          co_await (fake_upstream(acc, server_tls.get(), 'S') && start_upstream_tls(std::move(sock), *tls, c.host));
      INFO(mine.ec.message() << " / " << mine.detail);
      CHECK(mine.ec);
      CHECK_FALSE(mine.stream);
      CHECK(mine.detail.find(c.expect) != std::string::npos);
      CHECK(up.result.ec);  // the upstream saw the handshake fail too
    });
  }
}

TEST_CASE("upstream require encrypts without verifying") {
  auto server_tls = load(pki(), "other.crt", "other.key");
  auto tls = upstream_ctx(UpstreamSslMode::require, "");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    tcp::socket sock(exec);
    co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
    auto [up, mine] =
        co_await (fake_upstream(acc, server_tls.get(), 'S') && start_upstream_tls(std::move(sock), *tls, "db.example.com"));
    REQUIRE_FALSE(mine.ec);
    REQUIRE(dynamic_cast<SslStream<tcp::socket>*>(mine.stream.get()));
    co_await check_echo(*mine.stream, *up.result.stream, "ping");
  });
}

TEST_CASE("an upstream answering 'N': prefer goes on in plain text, require and verify-full fail") {
  for (auto mode : {UpstreamSslMode::prefer, UpstreamSslMode::require, UpstreamSslMode::verify_full}) {
    CAPTURE(to_string(mode));
    auto tls = upstream_ctx(mode, pki().path("ca.crt"));
    run_async([&]() -> boost::asio::awaitable<void> {
      auto exec = co_await boost::asio::this_coro::executor;
      auto acc = listen_loopback(exec);
      tcp::socket sock(exec);
      co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
      auto [up, mine] = co_await (fake_upstream(acc, nullptr, 'N') && start_upstream_tls(std::move(sock), *tls, "localhost"));
      if (mode == UpstreamSslMode::prefer) {
        REQUIRE_FALSE(mine.ec);
        CHECK_FALSE(dynamic_cast<SslStream<tcp::socket>*>(mine.stream.get()));
        co_await check_echo(*mine.stream, *up.result.stream, "plain");
      } else {
        CHECK(mine.ec == make_error_code(TlsErrc::upstream_refused_ssl));
        CHECK(mine.ec.message() == "the upstream server does not support SSL, but SSL was required");
        CHECK_FALSE(mine.stream);
      }
    });
  }
}

TEST_CASE("an upstream answering neither 'S' nor 'N' is an error") {
  auto tls = upstream_ctx(UpstreamSslMode::prefer, "");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    tcp::socket sock(exec);
    co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
    auto [up, mine] = co_await (fake_upstream(acc, nullptr, 'E') && start_upstream_tls(std::move(sock), *tls, "localhost"));
    CHECK(mine.ec == make_error_code(TlsErrc::unexpected_ssl_response));
    CHECK(mine.detail.find("'E'") != std::string::npos);
  });
}

TEST_CASE("an upstream that never answers the SSLRequest times out") {
  auto tls = upstream_ctx(UpstreamSslMode::require, "");
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    tcp::socket sock(exec);
    co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
    auto [aec, silent] = co_await acc.async_accept(use_nothrow);
    auto mine = co_await start_upstream_tls(std::move(sock), *tls, "localhost", in(200ms));
    CHECK(mine.ec == make_error_code(TlsErrc::handshake_timeout));
  });
}

TEST_CASE("upstream disable sends no SSLRequest") {
  auto tls = upstream_ctx(UpstreamSslMode::disable, "");
  CHECK_FALSE(tls->current());
  run_async([&]() -> boost::asio::awaitable<void> {
    auto exec = co_await boost::asio::this_coro::executor;
    auto acc = listen_loopback(exec);
    tcp::socket sock(exec);
    co_await sock.async_connect(acc.local_endpoint(), use_nothrow);
    auto [aec, peer] = co_await acc.async_accept(use_nothrow);
    auto mine = co_await start_upstream_tls(std::move(sock), *tls, "localhost");
    REQUIRE_FALSE(mine.ec);
    SocketStream<tcp::socket> up(std::move(peer));
    co_await check_echo(*mine.stream, up, "StartupMessage");  // the first bytes are ours, not an SSLRequest
  });
}

TEST_CASE("upstream contexts report unreadable CA files and missing settings") {
  std::string error;
  CHECK_FALSE(UpstreamTlsContext::create(UpstreamSslMode::verify_full, pki().path("absent.crt"), error));
  CHECK(error.find("absent.crt") != std::string::npos);
  error.clear();
  CHECK_FALSE(UpstreamTlsContext::create(UpstreamSslMode::verify_full, "", error));
  CHECK(error.find("upstream.sslrootcert") != std::string::npos);
  error.clear();
  CHECK(UpstreamTlsContext::create(UpstreamSslMode::verify_full, "system", error));
}

// ---- settings -------------------------------------------------------------------------

TEST_CASE("TLS settings parse with clear errors") {
  std::string error;
  CHECK(parse_client_tls_mode("disable", error) == ClientTlsMode::disable);
  CHECK(parse_client_tls_mode("allow", error) == ClientTlsMode::allow);
  CHECK(parse_client_tls_mode("require", error) == ClientTlsMode::require);
  CHECK_FALSE(parse_client_tls_mode("on", error));
  CHECK(error == "tls.mode: expected disable, allow or require, got 'on'");

  CHECK(parse_upstream_sslmode("disable", error) == UpstreamSslMode::disable);
  CHECK(parse_upstream_sslmode("prefer", error) == UpstreamSslMode::prefer);
  CHECK(parse_upstream_sslmode("require", error) == UpstreamSslMode::require);
  CHECK(parse_upstream_sslmode("verify-full", error) == UpstreamSslMode::verify_full);
  CHECK_FALSE(parse_upstream_sslmode("verify-ca", error));
  CHECK(error == "upstream.sslmode: 'verify-ca' is not supported; use disable, prefer, require or verify-full");
  CHECK_FALSE(parse_upstream_sslmode("Require", error));
  CHECK(error == "upstream.sslmode: expected disable, prefer, require or verify-full, got 'Require'");
  CHECK(to_string(UpstreamSslMode::verify_full) == "verify-full");

  CHECK(check_tls_settings(ClientTlsMode::allow, "", "") == "");
  CHECK(check_tls_settings(ClientTlsMode::allow, "a.crt", "a.key") == "");
  CHECK(check_tls_settings(ClientTlsMode::require, "", "") ==
        "tls.mode = require needs a certificate: set tls.cert and tls.key");
  CHECK(check_tls_settings(ClientTlsMode::allow, "a.crt", "") ==
        "tls.cert is set but tls.key is not: both are needed for TLS");
  CHECK(check_upstream_tls_settings(UpstreamSslMode::require, "") == "");
}

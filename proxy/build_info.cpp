// `tokengate version`: the version, commit and library versions (see build_info.hpp).
#include "proxy/build_info.hpp"

#include <botan/version.h>
#include <libpq-fe.h>
#include <lmdb.h>
#include <openssl/crypto.h>
#include <pg_query.h>
#include <spdlog/version.h>
#include <unicode/uversion.h>

#include <boost/version.hpp>
#include <string>

namespace tokengate {
namespace {

// PQlibVersion() is major * 10000 + minor since PostgreSQL 10.
std::string libpq_version() {
  const int v = PQlibVersion();
  return std::to_string(v / 10000) + "." + std::to_string(v % 10000);
}

std::string icu_version() {
  UVersionInfo info;
  u_getVersion(info);
  char text[U_MAX_VERSION_STRING_LENGTH];
  u_versionToString(info, text);
  return text;
}

}  // namespace

std::string version_report() {
  std::string out = std::string("tokengate ") + TOKENGATE_VERSION + " (commit " + build_commit() + ")\n";
  auto line = [&](const char* name, const std::string& version) { out += std::string("  ") + name + ": " + version + "\n"; };
  line("OpenSSL", OpenSSL_version(OPENSSL_VERSION));
  line("Botan", Botan::short_version_string());
  line("LMDB", mdb_version(nullptr, nullptr, nullptr));
  line("libpq", libpq_version());
  // Boost and spdlog are (mostly) headers: the versions compiled in.
  std::string boost = BOOST_LIB_VERSION;
  for (auto& ch : boost)
    if (ch == '_') ch = '.';
  line("Boost", boost);
  line("libpg_query", std::string("PostgreSQL ") + PG_VERSION + " parser");
  line("ICU", icu_version());
  line("spdlog", std::to_string(SPDLOG_VER_MAJOR) + "." + std::to_string(SPDLOG_VER_MINOR) + "." +
                     std::to_string(SPDLOG_VER_PATCH));
#ifdef TOKENGATE_HAVE_LIBSYSTEMD
  line("systemd notify", "libsystemd");
#else
  line("systemd notify", "not built in");
#endif
  return out;
}

}  // namespace tokengate

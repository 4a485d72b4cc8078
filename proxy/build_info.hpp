// What `tokengate version` prints: the version, the git commit it was built
// from, and the versions of the libraries linked in.
#pragma once

#include <string>

namespace tokengate {

// The commit the binary was built from (`git describe`, with "-dirty" for
// uncommitted changes), or "unknown" for a build outside a git checkout.
const char* build_commit() noexcept;

// Several lines: "tokengate 0.1.0 (commit …)", then one line per library,
// with the version found at run time where the library reports one (OpenSSL,
// Botan, LMDB, libpq, ICU) and at build time otherwise (headers only).
std::string version_report();

}  // namespace tokengate

// SASLprep (RFC 4013) of passwords, as PostgreSQL applies it before SCRAM:
// PostgreSQL stores the verifier of the prepared password, so tokengate must
// prepare a password the same way to check it or to log in with it.
#pragma once

#include <string>
#include <string_view>

namespace tokengate::auth {

// Returns the SASLprep'd password, or the password unchanged where
// PostgreSQL uses it unchanged: pure ASCII, invalid UTF-8, or a password
// that SASLprep prohibits (pg_saslprep's "use the raw password" cases).
std::string saslprep_password(std::string_view password);

}  // namespace tokengate::auth

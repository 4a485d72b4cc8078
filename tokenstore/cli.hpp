// The `tokengate tokens …` and `tokengate keys …` command line, usable while the server runs.
#pragma once

namespace tokengate::tokenstore {

// Entry point for `tokengate tokens …` / `keys …` / `store …`; main() calls it
// when argv[1] is "tokens", "keys" or "store", passing its argc/argv unchanged.
//
//   tokens list   [--user U | --all]                 (default: all users)
//   tokens create NAME --user U [--duration D] [--comment C]
//   tokens revoke NAME --user U
//   keys list
//   keys rotate
//   store migrate --to postgres --store-dsn DSN [--kek-file F]
//                 copies every token, policy, revocation and signing key
//                 (wrapped by the KEK) into the registry, in one transaction
//   every command: --data-dir DIR (default $TOKENGATE_DATA_DIR, else ./tokengate-data)
//
// Acts as an administrator (whoever can read the data directory owns the
// store anyway); created_by is recorded as "(command line)". The CLI cannot
// see upstream role memberships, so `create` applies the user's own policy
// and the default, not policies on the roles the user belongs to.
//
// Output: tables on stdout; `tokens create` prints the token, and nothing
// else, on stdout (name and expiry go to stderr), so `$(tokengate tokens
// create …)` captures just the token. Nothing else ever prints a token or key.
// Returns the process exit status: 0 success, 1 failure, 2 usage error.
int cli_main(int argc, char** argv);

}  // namespace tokengate::tokenstore

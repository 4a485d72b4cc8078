// Umbrella header for the token store, with the proxy's usage in one place.
//
// Start-up (throws keyring_error / store_error / lmdb::error with an
// operator-readable message; refuse to start on any of them):
//
//     tokenstore::keyring keys(data_dir);          // <data_dir>/signing.keys, 0600
//     tokenstore::store st(data_dir);              // LMDB env in <data_dir>
//     tokenstore::token_service svc(st, keys, cfg);
//     tokenstore::maintenance_thread upkeep(svc);  // last_used_at batches, purge
//     std::uint64_t rev_seq = svc.revocation_seq();
//
// Login (off the I/O thread if you like; ~3-5 us, no allocation for short names):
//
//     if (tokenstore::looks_like_token(password)) {
//         auto v = svc.verify(password, startup_user, unix_now);
//         // v.status == verify_status::ok -> log in upstream as v.owner;
//         // expired -> "API token expired"; anything else -> 28P01, reason to_string(v.status) in the log only
//     }
//
// Statements (after fetching role facts upstream):
//
//     auto r = svc.create(actor{user, is_admin}, req, owner_facts, unix_now);
//     if (!r) send ErrorResponse(r.error_value().sqlstate(), .message, .detail);
//
// Ending sessions of revoked tokens (poll about once a second):
//
//     auto rv = svc.revocations_since(rev_seq); rev_seq = rv.seq; end sessions whose tid is in rv.tids
//     svc.on_revoked(...) reports this process's own revocations at once.
//
// Keep Asio out of this folder: nothing here includes it.
#pragma once

#include "tokenstore/cli.hpp"
#include "tokenstore/duration.hpp"
#include "tokenstore/errors.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/result.hpp"
#include "tokenstore/service.hpp"
#include "tokenstore/store.hpp"

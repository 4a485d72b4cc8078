// Umbrella header for the token store, with the proxy's usage in one place.
//
// Start-up (throws keyring_error / store_error / lmdb::error with an
// operator-readable message; refuse to start on any of them):
//
//     tokenstore::keyring keys(data_dir);          // <data_dir>/signing.keys, 0600
//     tokenstore::store st(data_dir);              // LMDB env in <data_dir>
//     tokenstore::token_service svc(st, keys, cfg);
//
//   or, for a fleet sharing a registry in PostgreSQL (docs/fleet.md):
//
//     tokenstore::keyring keys(tokenstore::keyring::in_memory_t{});
//     tokenstore::pg_store st(pg_store_options{dsn, kek, …}, keys);  // migrates, loads, starts its feed
//     tokenstore::token_service svc(st, keys, cfg);
//     tokenstore::maintenance_thread upkeep(svc);  // last_used_at batches, purge
//     std::uint64_t rev_seq = svc.revocation_seq();
//
// Login (off the I/O thread if you like; ~3-5 us, no allocation for short names):
//
//     if (tokenstore::looks_like_token(password)) {
//         auto v = svc.verify(password, startup_user, unix_now);   // never throws
//         // v.status == verify_status::ok -> check the role afresh upstream: it must have the OID
//         // v.owner_oid (0: bind it now, svc.bind_owner_oid(v.tid, role.oid)), LOGIN and VALID UNTIL;
//         // then log in upstream as v.owner;
//         // expired -> "API token expired"; anything else -> 28P01, reason to_string(v.status) in the log only
//     }
//
// Statements (after fetching role facts upstream; protected_roles only for a
// non-superuser administrator acting for others):
//
//     actor who{user, is_admin, is_superuser, via_token, protected_roles};
//     auto r = svc.create(who, req, owner_facts /* with .oid */, unix_now);
//     if (!r) send ErrorResponse(r.error_value().sqlstate(), .message, .detail, .hint);
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
#include "tokenstore/kek.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/pg_store.hpp"
#include "tokenstore/result.hpp"
#include "tokenstore/service.hpp"
#include "tokenstore/store.hpp"

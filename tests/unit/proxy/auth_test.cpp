// SCRAM-SHA-256 client and verifier checks against RFC 7677's test vector,
// and MD5 password hashing.
#include <catch2/catch.hpp>

#include "proxy/auth/saslprep.hpp"
#include "proxy/auth/scram.hpp"

using namespace tokengate::auth;

namespace {
// RFC 7677 section 3.
constexpr const char* kServerFirst =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
constexpr const char* kClientFinal =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
constexpr const char* kServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
}  // namespace

TEST_CASE("ScramClient reproduces RFC 7677's exchange") {
  ScramClient c("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
  CHECK(c.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
  auto final_msg = c.client_final(kServerFirst);
  REQUIRE(final_msg);
  CHECK(*final_msg == kClientFinal);
  CHECK(c.verify_server_final(kServerFinal));
  CHECK_FALSE(c.verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
  CHECK_FALSE(c.verify_server_final("e=invalid-proof"));
}

TEST_CASE("ScramClient refuses a server nonce that does not extend its own") {
  ScramClient c("pencil", "abc");
  CHECK_FALSE(c.client_final("r=xyzdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
  CHECK_FALSE(c.client_final("r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));  // nothing added
  CHECK_FALSE(c.client_final("r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0"));
  CHECK_FALSE(c.client_final("r=abcdef,s=!!!,i=4096"));
  CHECK_FALSE(c.client_final("r=abcdef,i=4096"));
  CHECK_FALSE(c.verify_server_final(kServerFinal));  // no exchange happened
}

TEST_CASE("a random nonce is used when none is given, and never reused") {
  ScramClient a("pw"), b("pw");
  CHECK(a.client_first().rfind("n,,n=,r=", 0) == 0);
  CHECK(a.client_first() != b.client_first());
}

TEST_CASE("passwords are checked against SCRAM and MD5 verifiers") {
  const char* scram =
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
      "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
  CHECK(check_password_verifier(scram, "anyone", "pencil") == VerifierCheck::match);
  CHECK(check_password_verifier(scram, "anyone", "pencil2") == VerifierCheck::mismatch);
  CHECK(check_password_verifier("md54a0a68b43b6cd5cf266fa02f196e2371", "alice", "secret") == VerifierCheck::match);
  CHECK(check_password_verifier("md54a0a68b43b6cd5cf266fa02f196e2371", "bob", "secret") == VerifierCheck::mismatch);
  CHECK(check_password_verifier("plaintext", "alice", "plaintext") == VerifierCheck::unsupported);
  CHECK(check_password_verifier("SCRAM-SHA-256$x:y$z", "a", "b") == VerifierCheck::unsupported);
}

TEST_CASE("passwords longer than an HMAC key may be are checked as PostgreSQL checks them") {
  // Made with Python's hashlib.pbkdf2_hmac for 5,000 × 'p' (RFC 2104: a key longer than the hash's block is hashed
  // first). Botan's HMAC refuses keys over 4,096 bytes: such a password used to throw out of the verification
  // thread and end the process.
  const char* scram =
      "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$TCRk9Ga3BuQL5gudiiluxYQrTtJGkT123qjdaUjQDiQ=:"
      "EDAl5rS8N5BgQqlFtZDIyc6oVdRwBLW/fs0dg6QlJWI=";
  CHECK(check_password_verifier(scram, "anyone", std::string(5000, 'p')) == VerifierCheck::match);
  CHECK(check_password_verifier(scram, "anyone", std::string(4999, 'p')) == VerifierCheck::mismatch);
  CHECK(check_password_verifier(scram, "anyone", std::string(65535, 'p')) == VerifierCheck::mismatch);
}

TEST_CASE("the MD5 answer matches PostgreSQL's md5(md5(password||user)||salt)") {
  CHECK(md5_password_response("alice", "secret", {1, 2, 3, 4}) == "md598a0412b9c31436fc53776e863350083");
}

TEST_CASE("SASLprep prepares passwords as PostgreSQL does before SCRAM") {
  CHECK(saslprep_password("plain ascii") == "plain ascii");
  CHECK(saslprep_password("\xef\xac\x81x") == "fix");                 // U+FB01 ligature → "fi" (NFKC)
  CHECK(saslprep_password("a\xc2\xa0" "b") == "a b");                 // no-break space → SPACE
  CHECK(saslprep_password("a\xc2\xad" "b") == "ab");                  // soft hyphen → nothing
  CHECK(saslprep_password("u\xcc\x88") == "\xc3\xbc");                // u + combining diaeresis → ü
  CHECK(saslprep_password("bad\xff") == "bad\xff");                   // invalid UTF-8: used as is
  CHECK(saslprep_password("x\xee\x80\x80") == "x\xee\x80\x80");       // private use: prohibited, used as is
}

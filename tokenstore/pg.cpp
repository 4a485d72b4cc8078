// libpq wrappers for the registry: connecting, statements with text parameters, notifications.
#include "tokenstore/pg.hpp"

#include <array>
#include <charconv>

namespace tokengate::tokenstore::pg {

namespace {

std::string trimmed(const char* msg)
{
    std::string s = msg ? msg : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

result& result::operator=(result&& o) noexcept
{
    if (this != &o) {
        if (r_) PQclear(r_);
        r_ = o.r_;
        o.r_ = nullptr;
    }
    return *this;
}

result::~result()
{
    if (r_) PQclear(r_);
}

std::int64_t result::i64(int row, int col) const
{
    auto t = text(row, col);
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size())
        throw store_error("registry: expected a whole number in column " + std::to_string(col));
    return v;
}

std::vector<std::uint8_t> result::bytes(int row, int col) const
{
    auto t = text(row, col);
    if (t.size() < 2 || t[0] != '\\' || t[1] != 'x' || t.size() % 2 != 0)
        throw store_error("registry: a bytea value is not in hex form (bytea_output)");
    std::vector<std::uint8_t> out((t.size() - 2) / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        int hi = hex_value(t[2 + 2 * i]), lo = hex_value(t[3 + 2 * i]);
        if (hi < 0 || lo < 0) throw store_error("registry: a bytea value is not in hex form");
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return out;
}

connection::connection(const std::string& dsn)
{
    // Defaults first: keywords in the DSN (expanded from dbname) override
    // them. The timeouts bound how long a registry that went silent can hold
    // a caller; the keepalives notice a dead peer on an idle LISTEN.
    const char* keys[] = {"connect_timeout", "application_name",    "keepalives",      "keepalives_idle",
                          "keepalives_interval", "keepalives_count", "tcp_user_timeout", "dbname",
                          nullptr};
    const char* values[] = {"3", "tokengate registry", "1", "5", "2", "3", "5000", dsn.c_str(), nullptr};
    c_ = PQconnectdbParams(keys, values, 1);
    if (c_ == nullptr) throw store_unreachable("registry: out of memory connecting");
    if (PQstatus(c_) != CONNECTION_OK) {
        std::string why = trimmed(PQerrorMessage(c_));
        PQfinish(c_);
        c_ = nullptr;
        throw store_unreachable("cannot connect to the token registry: " + why);
    }
    // Our own decoding depends on these; a role or database default must not change them.
    exec("SET bytea_output = 'hex'");
    // Token creation and revocation are answered only once durable.
    exec("SET synchronous_commit = on");
    exec("SET client_min_messages = warning");
}

connection::~connection()
{
    if (c_) PQfinish(c_);
}

result connection::exec(std::string_view sql, std::span<const param> params)
{
    if (!ok()) throw store_unreachable("the token registry connection is closed");
    std::string q(sql);
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
    result r(PQexecParams(c_, q.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                          nullptr, 0));
    check(r);
    return r;
}

void connection::exec_script(std::string_view sql)
{
    if (!ok()) throw store_unreachable("the token registry connection is closed");
    std::string q(sql);
    result r(PQexec(c_, q.c_str()));
    check(r);
}

void connection::check(const result& r)
{
    const auto status = r.get() ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return;
    if (!ok() || r.get() == nullptr)
        throw store_unreachable("lost the connection to the token registry: " + trimmed(PQerrorMessage(c_)));
    const char* state = PQresultErrorField(r.get(), PG_DIAG_SQLSTATE);
    const char* msg = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY);
    std::string sqlstate = state ? state : "XX000";
    // Class 08 (connection), 57P0x (shutdown, crash), 53 (out of resources):
    // the registry is unreachable for now, not the statement wrong.
    if (sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("57P", 0) == 0 || sqlstate.rfind("53", 0) == 0)
        throw store_unreachable("token registry: " + sqlstate + " " + trimmed(msg));
    throw error(sqlstate, trimmed(msg ? msg : PQresultErrorMessage(r.get())));
}

bool connection::consume_input() noexcept { return ok() && PQconsumeInput(c_) == 1; }

std::vector<std::string> connection::notifications()
{
    std::vector<std::string> out;
    while (PGnotify* n = PQnotifies(c_)) {
        out.emplace_back(n->extra ? n->extra : "");
        PQfreemem(n);
    }
    return out;
}

std::string bytea_param(std::span<const std::uint8_t> bytes)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out = "\\x";
    for (auto b : bytes) {
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

}  // namespace tokengate::tokenstore::pg

// Thin RAII wrappers over libpq for the PostgreSQL registry: a connection, a result, text parameters.
//
// Only the registry (pg_store) and the command line use these; the proxy's
// own upstream traffic goes through its sans-io protocol code instead.
// Every value travels as a bound text parameter; nothing is spliced into SQL.
// bytea goes in and out as hex text (`\x…`).
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenstore/backend.hpp"

namespace tokengate::tokenstore::pg {

// The server answered with an error. what() is "SQLSTATE message"; never
// holds a parameter value.
class error : public store_error {
public:
    error(std::string sqlstate, const std::string& message)
        : store_error(sqlstate + " " + message), sqlstate_(std::move(sqlstate))
    {
    }
    [[nodiscard]] const std::string& sqlstate() const noexcept { return sqlstate_; }

private:
    std::string sqlstate_;
};

using param = std::optional<std::string>;  // nullopt: NULL

// A finished result. Values are views into it, valid while it lives.
class result {
public:
    result() = default;
    explicit result(PGresult* r) noexcept : r_(r) {}
    result(result&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
    result& operator=(result&& o) noexcept;
    result(const result&) = delete;
    result& operator=(const result&) = delete;
    ~result();

    [[nodiscard]] PGresult* get() const noexcept { return r_; }
    [[nodiscard]] int rows() const noexcept { return r_ ? PQntuples(r_) : 0; }
    [[nodiscard]] bool null(int row, int col) const noexcept { return PQgetisnull(r_, row, col) != 0; }
    [[nodiscard]] std::string_view text(int row, int col) const noexcept
    {
        return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
    }
    // Throws store_error when the value is not a whole number in range.
    [[nodiscard]] std::int64_t i64(int row, int col) const;
    [[nodiscard]] bool boolean(int row, int col) const { return text(row, col) == "t"; }
    // bytea in hex output form (`\x…`); throws store_error otherwise.
    [[nodiscard]] std::vector<std::uint8_t> bytes(int row, int col) const;
    // Exactly N bytes of bytea, or store_error.
    template <std::size_t N>
    void bytes_into(int row, int col, std::array<std::uint8_t, N>& out) const;

private:
    PGresult* r_ = nullptr;
};

class connection {
public:
    // Connects; throws store_unreachable with libpq's message (which names the
    // host, never the password) on failure.
    explicit connection(const std::string& dsn);
    connection(connection&&) = delete;
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;
    ~connection();

    // Runs one statement with text parameters. Throws pg::error on an
    // ErrorResponse, store_unreachable when the connection is gone.
    result exec(std::string_view sql, std::span<const param> params = {});
    result exec(std::string_view sql, std::initializer_list<param> params)
    {
        return exec(sql, std::span<const param>(params.begin(), params.size()));
    }
    // Several statements without parameters (migrations).
    void exec_script(std::string_view sql);

    [[nodiscard]] bool ok() const noexcept { return c_ != nullptr && PQstatus(c_) == CONNECTION_OK; }
    [[nodiscard]] int socket() const noexcept { return PQsocket(c_); }
    // Reads what arrived on the socket; false when the connection broke.
    bool consume_input() noexcept;
    // Channel payloads of the NOTIFYs received so far.
    std::vector<std::string> notifications();
    [[nodiscard]] int backend_pid() const noexcept { return PQbackendPID(c_); }

private:
    void check(const result& r);  // throws unless the statement succeeded
    PGconn* c_ = nullptr;
};

// Hex for bytea parameters: `\x0a1b…`.
[[nodiscard]] std::string bytea_param(std::span<const std::uint8_t> bytes);

// ---- inline ----------------------------------------------------------------

template <std::size_t N>
void result::bytes_into(int row, int col, std::array<std::uint8_t, N>& out) const
{
    auto b = bytes(row, col);
    if (b.size() != N) throw store_error("registry: a bytea value has " + std::to_string(b.size()) +
                                         " bytes where " + std::to_string(N) + " were expected");
    std::copy(b.begin(), b.end(), out.begin());
}

}  // namespace tokengate::tokenstore::pg

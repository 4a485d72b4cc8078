// result<T>: a value or a tokenstore::error (a small stand-in for std::expected, absent from gcc 12).
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "tokenstore/errors.hpp"

namespace tokengate::tokenstore {

template <typename T>
class [[nodiscard]] result {
public:
    result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    result(error err) : v_(std::in_place_index<1>, std::move(err)) {}

    [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { assert(has_value()); return std::get<0>(v_); }
    const T& value() const& { assert(has_value()); return std::get<0>(v_); }
    T&& value() && { assert(has_value()); return std::get<0>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    const error& error_value() const& { assert(!has_value()); return std::get<1>(v_); }
    // The code, errc::ok when there is a value (handy in test comparisons).
    [[nodiscard]] errc code() const noexcept { return has_value() ? errc::ok : std::get<1>(v_).code; }

private:
    std::variant<T, error> v_;
};

// Operations that return nothing on success.
template <>
class [[nodiscard]] result<void> {
public:
    result() = default;
    result(error err) : err_(std::move(err)) {}

    [[nodiscard]] bool has_value() const noexcept { return err_.code == errc::ok; }
    explicit operator bool() const noexcept { return has_value(); }
    const error& error_value() const& { return err_; }
    [[nodiscard]] errc code() const noexcept { return err_.code; }

private:
    error err_;
};

}  // namespace tokengate::tokenstore

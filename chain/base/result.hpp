// Result<T>: the one error convention of chain/ and daemon/ — a value or an Error that says
// what failed and why (for a verifier rejection, the relevant part of its log).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace policyd {

struct Error {
  std::string message;
  std::string detail;  // e.g. the verifier log; may be empty
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(std::move(e)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

inline Error make_error(std::string message, std::string detail = {}) {
  return Error{std::move(message), std::move(detail)};
}

}  // namespace policyd

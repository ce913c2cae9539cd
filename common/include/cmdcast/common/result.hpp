// A value or a human-readable error, for operations that fail on bad input (no exceptions:
// the WebAssembly build does not catch them).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace cmdcast::common {

struct failure {
  std::string message;
};

template <class T>
class result {
 public:
  result(T value) : v_(std::move(value)) {}
  result(failure f) : v_(std::move(f)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  const std::string& error() const { return std::get<1>(v_).message; }

 private:
  std::variant<T, failure> v_;
};

}  // namespace cmdcast::common

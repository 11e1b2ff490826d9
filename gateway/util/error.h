// Errors as values. A load error names where it comes from (file:line:column) and what was wrong;
// the data path uses these too, with `who` saying which component failed.
#pragma once

#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace hsp {

// A position in a configuration source. line and col are 1-based; 0 means "unknown".
struct SourceLoc {
  std::string file;
  int line = 0;
  int col = 0;

  std::string str() const;  // "file:line:col", or just the file when line is 0
};

struct Error {
  SourceLoc loc;
  std::string message;

  // "file:line:col: message"
  std::string str() const;
};

using Errors = std::vector<Error>;

// A value or the errors that prevented it. Small on purpose: no exceptions cross module borders.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error e) : v_(Errors{std::move(e)}) {}
  Result(Errors es) : v_(std::move(es)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Errors& errors() const { return std::get<1>(v_); }

 private:
  std::variant<T, Errors> v_;
};

}  // namespace hsp

// Loading a policy file: YAML -> validated Policy, or one error with file:line:column.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "config/policy.hpp"

namespace policyd::config {

// The first problem found in a policy. what() is "FILE:LINE:COLUMN: MESSAGE" (1-based), or
// "FILE: MESSAGE" when there is no position (line and column 0, e.g. the file cannot be read).
class PolicyError : public std::runtime_error {
 public:
  PolicyError(std::string file, int line, int column, std::string message);

  const std::string& file() const noexcept { return file_; }
  int line() const noexcept { return line_; }
  int column() const noexcept { return column_; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string file_;
  int line_;
  int column_;
  std::string message_;
};

// Parses and validates a policy. Relative secret_file/jwks_file paths are resolved against the
// directory of the policy file (of name_for_errors for a string); those files are not read here.
// Throws PolicyError.
Policy load_policy_file(const std::string& path);
// The file's bytes, as load_policy_file reads them; throws PolicyError naming the file.
std::string read_policy_text(const std::string& path);
Policy load_policy_string(std::string_view yaml, const std::string& name_for_errors);

}  // namespace policyd::config

// Shell completion for a CLI11 command line (`policyctl completion bash|zsh`): the script is
// generated from the App itself, so every command and option the binary accepts is completed
// and none it does not.
//
// What a value completes to:
//   - an option or positional with an IsMember check: its members (e.g. -o text|json);
//   - a positional named FILE: policy files (*.yaml, *.yml) and directories;
//   - an option whose type name is PATH or FILE: any file;
//   - anything else: nothing (the shell offers no guess).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace policyd::completion {

// The shells a script can be generated for.
inline constexpr const char* kShells[] = {"bash", "zsh"};

// The completion script for `app` (program name: app.get_name()) in `shell` ("bash" or
// "zsh"). Throws std::invalid_argument for any other shell.
std::string script(const CLI::App& app, const std::string& shell);

}  // namespace policyd::completion

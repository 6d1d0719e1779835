// policyctl: the operator's CLI (CLI.md). `validate` runs the daemon's own loader.
#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chain/compile.hpp"
#include "config/loader.hpp"

namespace {

int validate(const std::string& file, bool json) {
  try {
    auto policy = policyd::config::load_policy_file(file);
    // What the dataplane would be given: the same compile the daemon runs.
    auto tables = policyd::chain::compile(policy, 0, 0);
    if (!tables) {
      if (json)
        std::puts(nlohmann::json{{"valid", false}, {"error", tables.error().message}}.dump().c_str());
      else
        std::fprintf(stderr, "%s\n", tables.error().message.c_str());
      return 1;
    }
    if (json) {
      nlohmann::json out{{"valid", true},
                         {"file", file},
                         {"listeners", policy.listeners.size()},
                         {"hosts", policy.hosts.size()},
                         {"routes", tables->rules.size()},
                         {"warnings", tables->warnings}};
      std::puts(out.dump().c_str());
    } else {
      for (const auto& w : tables->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      std::printf("%s: valid (%zu listeners, %zu hosts, %zu routes)\n", file.c_str(), policy.listeners.size(),
                  policy.hosts.size(), tables->rules.size());
    }
    return 0;
  } catch (const policyd::config::PolicyError& e) {
    if (json)
      std::puts(nlohmann::json{{"valid", false},
                               {"error", e.what()},
                               {"file", e.file()},
                               {"line", e.line()},
                               {"column", e.column()},
                               {"message", e.message()}}
                    .dump()
                    .c_str());
    else
      std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policyctl: operate policyd"};
  std::string socket = "/run/policyd/policyd.sock", output = "text";
  app.add_option("--socket", socket, "the daemon's control socket")->capture_default_str();
  app.add_option("-o,--output", output, "text|json")->check(CLI::IsMember({"text", "json"}));
  app.require_subcommand(1);
  std::string file;
  auto* v = app.add_subcommand("validate", "check a policy file locally (no daemon needed)");
  v->add_option("FILE", file, "policy file")->required();
  CLI11_PARSE(app, argc, argv);
  if (v->parsed()) return validate(file, output == "json");
  return 1;
}

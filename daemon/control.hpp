// The control protocol (Kea-style command registry): one JSON object per line on a local
// stream socket. Request {"command": NAME, "arguments": {...}}; response
// {"result": 0|1|2, "text": MESSAGE, "arguments": {...}} where result is policyctl's exit
// status (0 done, 1 the input is invalid, 2 the daemon or the kernel refused).
#pragma once

#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace policyd::control {

struct Response {
  int result = 0;
  std::string text;
  nlohmann::json arguments = nlohmann::json::object();
};

using Handler = std::function<Response(const nlohmann::json& arguments)>;

// Commands the daemon serves (see daemon/daemon.cpp for the arguments of each):
//   status, stats, apply {policy, source, dry_run}, reload, detach
using Registry = std::map<std::string, Handler>;

}  // namespace policyd::control

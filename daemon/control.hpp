// The control protocol (Kea-style command registry): one JSON object per line on a local
// stream socket. Request {"command": NAME, "arguments": {...}}; response
// {"result": 0|1|2, "text": MESSAGE, "arguments": {...}} where result is policyctl's exit
// status (0 done, 1 the input is invalid, 2 the daemon or the kernel refused).
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "chain/base/result.hpp"

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

// The longest request line the daemon reads (a policy travels inside `apply`).
inline constexpr std::size_t kMaxRequestLine = std::size_t{16} << 20;

// A failure as a response: the message as text, Error::detail (e.g. the verifier's log) as
// arguments.detail, which policyctl prints below the message.
inline Response error_response(const Error& e, int result = 2) {
  Response r{result, e.message, nlohmann::json::object()};
  if (!e.detail.empty()) r.arguments["detail"] = e.detail;
  return r;
}

// Streaming (`events --follow`): the command answers with one response line as usual and the
// connection then carries one JSON object per line (an event each) until either side closes.
// Streaming commands are registered on the ControlServer (add_stream), not in a Registry.

}  // namespace policyd::control

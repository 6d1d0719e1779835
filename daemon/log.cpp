#include "daemon/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace policyd {

bool setup_logging(const std::string& level, const std::string& format, std::string* error) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    *error = "unknown --log-level '" + level + "' (expected trace, debug, info, warn or error)";
    return false;
  }
  std::string pattern;
  if (format == "text")
    pattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v";
  else if (format == "json")
    pattern = R"({"time":"%Y-%m-%dT%H:%M:%S.%e","level":"%l","logger":"%n","msg":"%v"})";
  else {
    *error = "unknown --log-format '" + format + "' (expected text or json)";
    return false;
  }
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  for (const char* name : {"main", "config", "chain", "bpf", "ctl"}) {
    if (spdlog::get(name)) spdlog::drop(name);
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(lvl);
    logger->set_pattern(pattern);
    logger->flush_on(spdlog::level::trace);
    spdlog::register_logger(logger);
  }
  return true;
}

}  // namespace policyd

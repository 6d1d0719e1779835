#include "daemon/log.hpp"

#include <cstdio>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/details/os.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace policyd {

namespace {

// One JSON object per line for log shippers. Built with nlohmann::json, not a pattern: a
// message may hold quotes, backslashes, newlines (a verifier log) or bytes that are not
// UTF-8 (a client's header in an event), and every line must still parse.
class JsonLineSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JsonLineSink(std::FILE* out) : out_(out) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    using namespace std::chrono;
    const auto t = msg.time;
    const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
    std::tm tm = spdlog::details::os::localtime(system_clock::to_time_t(t));
    char stamp[80];
    std::snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03lld", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(ms));
    nlohmann::json line = {{"time", stamp},
                           {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                                 spdlog::level::to_string_view(msg.level).size())},
                           {"logger", std::string(msg.logger_name.data(), msg.logger_name.size())},
                           {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    text.push_back('\n');
    std::fwrite(text.data(), 1, text.size(), out_);
  }
  void flush_() override { std::fflush(out_); }

 private:
  std::FILE* out_;
};

}  // namespace

bool setup_logging(const std::string& level, const std::string& format, std::string* error, std::FILE* out) {
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off") {
    *error = "unknown --log-level '" + level + "' (expected trace, debug, info, warn or error)";
    return false;
  }
  spdlog::sink_ptr sink;
  if (format == "text") {
    sink = std::make_shared<spdlog::sinks::stdout_sink_base<spdlog::details::console_mutex>>(out);
    sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  } else if (format == "json") {
    sink = std::make_shared<JsonLineSink>(out);
  } else {
    *error = "unknown --log-format '" + format + "' (expected text or json)";
    return false;
  }
  for (const char* name : {"main", "config", "chain", "bpf", "ctl", "events"}) {
    if (spdlog::get(name)) spdlog::drop(name);
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(lvl);
    logger->flush_on(spdlog::level::trace);
    spdlog::register_logger(logger);
  }
  return true;
}

}  // namespace policyd

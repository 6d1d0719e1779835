// The fixed set of named loggers (main, config, chain, bpf, ctl), text or JSON lines.
#pragma once

#include <string>

namespace policyd {

// level: trace|debug|info|warn|error; format: text|json. Returns false on a bad value.
bool setup_logging(const std::string& level, const std::string& format, std::string* error);

}  // namespace policyd

// The fixed set of named loggers (main, config, chain, bpf, ctl, and events: the dataplane's
// decision events), text or JSON lines.
#pragma once

#include <cstdio>
#include <string>

namespace policyd {

// level: trace|debug|info|warn|error; format: text|json. Returns false on a bad value.
// Lines go to `out` (stderr: journald and the tests read it); json: one object per line with
// time, level, logger and msg, always valid JSON whatever the message holds.
bool setup_logging(const std::string& level, const std::string& format, std::string* error,
                   std::FILE* out = stderr);

}  // namespace policyd

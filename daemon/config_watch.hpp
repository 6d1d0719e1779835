// ConfigWatch: reload when the policy file changes. inotify watches the file's directory,
// not the file, so an editor's write-to-temp-and-rename, a delete and a re-create are all
// seen; changes are debounced (one reload for a burst of events). The reload itself is the
// daemon's: an invalid file is logged with file:line:column and the running policy stays.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "chain/base/result.hpp"

namespace policyd {

class ConfigWatch {
 public:
  // on_change: the file was written, replaced or re-created (debounced); on_gone: it was
  // deleted or moved away (the running policy stays).
  ConfigWatch(boost::asio::io_context& io, std::string path, std::function<void()> on_change,
              std::function<void()> on_gone, std::chrono::milliseconds debounce = std::chrono::milliseconds(250));
  ~ConfigWatch();
  ConfigWatch(const ConfigWatch&) = delete;
  ConfigWatch& operator=(const ConfigWatch&) = delete;

  Status start();
  void stop();

 private:
  void wait();
  void read_events();

  std::string path_, dir_, name_;
  std::function<void()> on_change_, on_gone_;
  std::chrono::milliseconds debounce_;
  boost::asio::posix::stream_descriptor fd_;
  boost::asio::steady_timer timer_;
  bool pending_ = false;
};

}  // namespace policyd

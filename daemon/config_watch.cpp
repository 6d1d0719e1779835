#include "daemon/config_watch.hpp"

#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

namespace policyd {

ConfigWatch::ConfigWatch(boost::asio::io_context& io, std::string path, std::function<void()> on_change,
                         std::function<void()> on_gone, std::chrono::milliseconds debounce)
    : path_(std::move(path)),
      on_change_(std::move(on_change)),
      on_gone_(std::move(on_gone)),
      debounce_(debounce),
      fd_(io),
      timer_(io) {
  std::filesystem::path p = std::filesystem::absolute(path_);
  dir_ = p.parent_path().string();
  name_ = p.filename().string();
}

ConfigWatch::~ConfigWatch() { stop(); }

Status ConfigWatch::start() {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return make_error(fmt::format("inotify: {}", std::strerror(errno)));
  // IN_CLOSE_WRITE, not IN_MODIFY: a file is read once its writer is done with it
  if (inotify_add_watch(fd, dir_.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) < 0) {
    int err = errno;
    close(fd);
    return make_error(fmt::format("watching {}: {}", dir_, std::strerror(err)));
  }
  fd_.assign(fd);
  wait();
  return Ok{};
}

void ConfigWatch::stop() {
  boost::system::error_code ec;
  timer_.cancel();
  if (fd_.is_open()) fd_.close(ec);
}

void ConfigWatch::wait() {
  fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;
    read_events();
    wait();
  });
}

void ConfigWatch::read_events() {
  alignas(inotify_event) char buf[8192];
  bool changed = false, gone = false;
  for (;;) {
    ssize_t n = ::read(fd_.native_handle(), buf, sizeof(buf));
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + e->len;
      if (e->len == 0 || name_ != e->name) continue;
      if (e->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
        changed = true;
        gone = false;
      } else if (e->mask & (IN_DELETE | IN_MOVED_FROM)) {
        gone = true;
      }
    }
  }
  if (gone && !changed) {
    on_gone_();
    return;
  }
  if (!changed) return;
  // debounce: one reload after the last of a burst of writes
  timer_.expires_after(debounce_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) on_change_();
  });
}

}  // namespace policyd

// Fd: one owned file descriptor (a BPF map, program or link, a socket), closed when it goes.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <utility>

namespace policyd::chain {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // A second descriptor of the same object, owned by the result (invalid if fd is).
  static Fd dup_of(int fd) { return Fd(fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 3) : -1); }

 private:
  int fd_ = -1;
};

}  // namespace policyd::chain

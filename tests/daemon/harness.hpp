// Test helpers for control_tests: a temporary directory, a ControlServer running on its own
// io thread, and a plain POSIX client.
#pragma once

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <nlohmann/json.hpp>

#include "daemon/control_server.hpp"

namespace policyd::test {

// A fresh directory under /tmp, 0755 so that another uid may reach sockets in it; removed
// with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/policyd-ctl-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
    ::chmod(path_.c_str(), 0755);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A ControlServer on an io_context run by a thread of its own. Set the registry up before
// start(); afterwards touch the server only through on_io().
class ServerThread {
 public:
  explicit ServerThread(std::string socket_path, std::string group = "policyd")
      : server_(std::make_unique<control::ControlServer>(io_, std::move(socket_path), registry_, std::move(group))) {}
  ~ServerThread() { stop(); }

  control::Registry& registry() { return registry_; }
  control::ControlServer& server() { return *server_; }

  // Starts listening (on the calling thread, before the io thread exists), then runs io.
  Status start() {
    auto st = server_->start();
    if (!st) return st;
    thread_ = std::thread([this] {
      io_.run();
      ran_out_.set_value();
    });
    return st;
  }

  // Runs f on the io thread and waits for it.
  void on_io(std::function<void()> f) {
    std::promise<void> done;
    boost::asio::post(io_, [&] {
      f();
      done.set_value();
    });
    done.get_future().wait();
  }

  // Stops the server on the io thread; io_context::run() must then return by itself.
  // Returns false if it did not within 5 s (it is then stopped by force).
  bool stop() {
    if (!thread_.joinable()) return true;
    boost::asio::post(io_, [this] { server_->stop(); });
    bool returned = ran_out_.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready;
    if (!returned) io_.stop();
    thread_.join();
    return returned;
  }

 private:
  boost::asio::io_context io_;
  control::Registry registry_;
  std::unique_ptr<control::ControlServer> server_;
  std::thread thread_;
  std::promise<void> ran_out_;
};

// A blocking client on a local stream socket.
class Client {
 public:
  Client() = default;
  explicit Client(const std::string& path) { connect(path); }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // 0 or the errno of connect().
  int connect(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) return errno;
    return 0;
  }
  bool connected() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // False if not everything could be sent.
  bool send(const std::string& data) {
    std::size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // One line without its newline; nullopt on EOF, error or timeout.
  std::optional<std::string> line(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        std::string l = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return l;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[65536];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0) return std::nullopt;
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // The next line as JSON (null if none came).
  nlohmann::json response(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    auto l = line(timeout);
    return l ? nlohmann::json::parse(*l) : nlohmann::json();
  }

  nlohmann::json call(const nlohmann::json& request) {
    if (!send(request.dump() + "\n")) return nlohmann::json();
    return response();
  }

  // True once the peer has closed (EOF) within the timeout, with nothing more to read.
  bool closed_by_peer(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
};

inline control::Response ok(nlohmann::json arguments = nlohmann::json::object(), std::string text = {}) {
  control::Response r;
  r.text = std::move(text);
  r.arguments = std::move(arguments);
  return r;
}

inline control::Response fails(int result, std::string text, nlohmann::json arguments = nlohmann::json::object()) {
  control::Response r;
  r.result = result;
  r.text = std::move(text);
  r.arguments = std::move(arguments);
  return r;
}

}  // namespace policyd::test

// MetricsServer: the Prometheus endpoint. A small HTTP/1.1 server (Boost.Beast) on the
// daemon's io_context: GET (or HEAD) /metrics answers with what `render` returns, in the text
// exposition format; any other path is 404, any other method 405. Bounded (Limits): request
// heads of at most 8 KiB and no body, 10 s to send a request (or between requests on a
// kept-alive connection) and to take an answer, at most 16 connections at once (more are
// closed as they come).
//
// Served on the io thread, like everything in the daemon: a scrape reads counters between
// other work, never concurrently with it.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "chain/base/result.hpp"

namespace policyd {

// (Outside the class: GCC will not take a nested struct's member initializers in a default
// argument of its enclosing class.)
struct MetricsLimits {
  std::size_t max_connections = 16;
  std::size_t max_head_bytes = 8192;
  std::chrono::milliseconds timeout{10000};
  std::chrono::milliseconds retry_bind{10000};  // start_or_retry()
};

class MetricsServer {
 public:
  class Session;
  using Render = std::function<std::string()>;

  using Limits = MetricsLimits;

  // `address`: "HOST:PORT" with an IPv4 literal, "[IPV6]:PORT", or "off" / "" (no endpoint).
  static Result<std::optional<boost::asio::ip::tcp::endpoint>> parse_address(const std::string& address);

  MetricsServer(boost::asio::io_context& io, boost::asio::ip::tcp::endpoint endpoint, Render render,
                Limits limits = {});
  ~MetricsServer();  // stop()
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds and starts accepting. The error names the address (e.g. it is in use).
  Status start();
  // start(), and if that fails, try again every retry_bind until it works or stop() is called
  // (an address still held by a process that is exiting, an address not configured yet).
  // The first failure is returned; later ones are logged at debug level.
  Status start_or_retry();
  // Closes the acceptor and every connection; cancels everything pending, so the io loop can
  // return.
  void stop();

  bool listening() const { return acceptor_.is_open(); }
  // The bound endpoint (with the port the kernel chose when asked for port 0).
  boost::asio::ip::tcp::endpoint local_endpoint() const;
  std::size_t connections() const { return sessions_.size(); }
  std::string address() const;
  const Limits& limits() const { return limits_; }

 private:
  void accept();
  void retry_later();
  void forget(Session* s);

  boost::asio::ip::tcp::endpoint endpoint_;
  Render render_;
  Limits limits_;
  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_;
  std::set<std::shared_ptr<Session>> sessions_;
  bool stopped_ = false;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // handlers check it: the server may be gone
};

}  // namespace policyd

#include "daemon/metrics_server.hpp"

#include <array>
#include <utility>

#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/metrics.hpp"

namespace policyd {

namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using boost::asio::ip::tcp;
using boost::system::error_code;

std::shared_ptr<spdlog::logger> log_main() { return spdlog::get("main"); }

std::string format_endpoint(const tcp::endpoint& ep) {
  if (ep.address().is_v6()) return fmt::format("[{}]:{}", ep.address().to_string(), ep.port());
  return fmt::format("{}:{}", ep.address().to_string(), ep.port());
}

}  // namespace

// One connection: requests read one at a time (a pipelined one waits in the buffer), each
// answered before the next is read.
class MetricsServer::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, MetricsServer* server)
      : stream_(std::move(socket)), server_(server), limits_(server->limits_), buffer_(limits_.max_head_bytes) {}

  void read() {
    if (!open_) return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(limits_.max_head_bytes));
    stream_.expires_after(limits_.timeout);  // to send the whole head, or between kept-alive requests
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](const error_code& ec, std::size_t) {
      self->on_read(ec);
    });
  }

  void close() {
    if (!open_) return;
    open_ = false;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();  // cancels the read or write in flight and the timer
    if (server_) std::exchange(server_, nullptr)->forget(this);
  }

  // The server is going away: close without calling back.
  void orphan() {
    server_ = nullptr;
    close();
  }

 private:
  void on_read(const error_code& ec) {
    if (!open_ || ec == boost::asio::error::operation_aborted) return;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout) {
      close();
      return;
    }
    if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
      respond(http::status::request_header_fields_too_large, false, false,
              fmt::format("request head over {} bytes\n", limits_.max_head_bytes));
      return;
    }
    if (ec.category() == http::make_error_code(http::error::bad_method).category()) {  // malformed (or a body)
      respond(http::status::bad_request, false, false, fmt::format("bad request: {}\n", ec.message()));
      return;
    }
    if (ec) {
      close();
      return;
    }
    const auto& req = parser_->get();
    const bool keep = req.keep_alive();
    const bool head = req.method() == http::verb::head;
    std::string_view target(req.target().data(), req.target().size());
    const auto path = target.substr(0, target.find('?'));
    if (req.method() != http::verb::get && !head) {
      respond(http::status::method_not_allowed, keep, false, "only GET and HEAD are served\n");
    } else if (path != "/metrics") {
      respond(http::status::not_found, keep, head, "not found: the metrics are at /metrics\n");
    } else if (server_ == nullptr) {
      close();
    } else {
      std::string text;
      try {
        text = server_->render_();
      } catch (const std::exception& e) {
        if (auto log = log_main()) log->error("metrics: rendering failed: {}", e.what());
        respond(http::status::internal_server_error, false, head, fmt::format("rendering failed: {}\n", e.what()));
        return;
      }
      respond(http::status::ok, keep, head, std::move(text), metrics::kContentType);
    }
  }

  void respond(http::status status, bool keep, bool head, std::string body,
               std::string_view content_type = "text/plain; charset=utf-8") {
    res_ = {};
    res_.version(parser_->get().version() == 10 ? 10 : 11);
    res_.result(status);
    res_.set(http::field::server, "policyd");
    res_.set(http::field::content_type, beast::string_view(content_type.data(), content_type.size()));
    if (status == http::status::method_not_allowed) res_.set(http::field::allow, "GET, HEAD");
    res_.keep_alive(keep);
    const auto length = body.size();
    if (!head) res_.body() = std::move(body);
    res_.content_length(length);  // HEAD: the length GET would have, and no body
    keep_ = keep;
    stream_.expires_after(limits_.timeout);
    http::async_write(stream_, res_, [self = shared_from_this()](const error_code& ec, std::size_t) {
      if (!self->open_ || ec == boost::asio::error::operation_aborted) return;
      if (ec) {
        self->close();
        return;
      }
      if (!self->keep_) {
        self->finish();
        return;
      }
      self->read();
    });
  }

  // Closes after a last answer: our side first, then whatever the client still sends is read
  // and dropped until it closes too (bounded by the timeout). Closing with unread data would
  // make the kernel send a reset, which can destroy the answer before the client reads it.
  void finish() {
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(limits_.timeout);
    drain();
  }

  void drain() {
    auto self = shared_from_this();
    stream_.async_read_some(boost::asio::buffer(scratch_), [self](const error_code& ec, std::size_t) {
      if (!self->open_ || ec == boost::asio::error::operation_aborted) return;
      if (ec) {
        self->close();  // the client closed (or the timeout hit)
        return;
      }
      self->drain();
    });
  }

  beast::tcp_stream stream_;
  MetricsServer* server_;
  const Limits limits_;
  beast::flat_buffer buffer_;  // at most max_head_bytes: a head that does not fit is refused (431)
  std::optional<http::request_parser<http::empty_body>> parser_;
  http::response<http::string_body> res_;
  std::array<char, 4096> scratch_;
  bool open_ = true;
  bool keep_ = false;
};

Result<std::optional<tcp::endpoint>> MetricsServer::parse_address(const std::string& address) {
  if (address.empty() || address == "off") return std::optional<tcp::endpoint>{};
  auto bad = [&](std::string_view why) {
    return make_error(fmt::format("--metrics '{}': {} (expected HOST:PORT with an IPv4 address, [IPV6]:PORT, "
                                  "or off)",
                                  address, why));
  };
  std::string host, port;
  if (address.front() == '[') {
    auto close = address.find("]:");
    if (close == std::string::npos) return bad("an IPv6 address needs ]:PORT after it");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string::npos) return bad("an IPv6 address goes in brackets, e.g. [::1]:9464");
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    return bad(fmt::format("'{}' is not a port number", port));
  error_code ec;
  auto ip = boost::asio::ip::make_address(host, ec);
  if (ec) return bad(fmt::format("'{}' is not an IP address", host));
  return std::optional<tcp::endpoint>{tcp::endpoint(ip, static_cast<unsigned short>(std::stoul(port)))};
}

MetricsServer::MetricsServer(boost::asio::io_context& io, tcp::endpoint endpoint, Render render, Limits limits)
    : endpoint_(std::move(endpoint)), render_(std::move(render)), limits_(limits), acceptor_(io), retry_(io) {}

MetricsServer::~MetricsServer() { stop(); }

std::string MetricsServer::address() const { return format_endpoint(endpoint_); }

tcp::endpoint MetricsServer::local_endpoint() const {
  error_code ec;
  auto ep = acceptor_.local_endpoint(ec);
  return ec ? endpoint_ : ep;
}

Status MetricsServer::start() {
  if (acceptor_.is_open()) return Ok{};
  stopped_ = false;
  error_code ec;
  acceptor_.open(endpoint_.protocol(), ec);
  // a restarted daemon binds while its predecessor's connections are in TIME_WAIT
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint_, ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code ignored;
    acceptor_.close(ignored);
    return make_error(fmt::format("metrics: cannot listen on {}: {}", address(), ec.message()));
  }
  if (auto log = log_main()) log->info("metrics at http://{}/metrics", format_endpoint(local_endpoint()));
  accept();
  return Ok{};
}

Status MetricsServer::start_or_retry() {
  auto st = start();
  if (!st) retry_later();
  return st;
}

void MetricsServer::retry_later() {
  retry_.expires_after(limits_.retry_bind);
  retry_.async_wait([this, alive = std::weak_ptr<char>(alive_)](const error_code& ec) {
    if (alive.expired() || ec || stopped_) return;
    if (auto st = start(); !st) {
      if (auto log = log_main())
        log->debug("{}; trying again in {} ms", st.error().message, limits_.retry_bind.count());
      retry_later();
    }
  });
}

void MetricsServer::stop() {
  stopped_ = true;
  error_code ec;
  acceptor_.close(ec);
  retry_.cancel();
  auto sessions = std::move(sessions_);
  sessions_.clear();
  for (const auto& s : sessions) s->orphan();
}

void MetricsServer::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<char>(alive_)](const error_code& ec, tcp::socket socket) {
    if (alive.expired() || ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // e.g. EMFILE: the listener stays; the next accept is tried after a pause, not in a spin
      if (auto log = log_main()) log->warn("metrics: accept: {}", ec.message());
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([this, alive](const error_code& wait_ec) {
        if (alive.expired() || wait_ec || !acceptor_.is_open()) return;
        accept();
      });
      return;
    }
    if (sessions_.size() >= limits_.max_connections) {
      // closed at once: a scraper sees the connection end instead of waiting on a backlog
      if (auto log = log_main()) log->debug("metrics: {} connections open; closing a new one", sessions_.size());
      error_code ignored;
      socket.close(ignored);
    } else {
      auto session = std::make_shared<Session>(std::move(socket), this);
      sessions_.insert(session);
      session->read();
    }
    accept();
  });
}

void MetricsServer::forget(Session* s) {
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
    if (it->get() == s) {
      sessions_.erase(it);
      return;
    }
}

}  // namespace policyd

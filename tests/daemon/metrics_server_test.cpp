// MetricsServer over real loopback TCP: GET/HEAD /metrics, 404, 405, keep-alive, the limits
// (head size, body, connections, idle timeout), bind failures and the retry, and stop()
// letting the io loop return with connections open.
#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>

#include "daemon/metrics.hpp"
#include "daemon/metrics_server.hpp"

namespace http = boost::beast::http;
using boost::asio::ip::tcp;
using policyd::MetricsServer;
using namespace std::chrono_literals;

namespace {

// A MetricsServer on 127.0.0.1 (a port the kernel picks) run by an io thread of its own.
class Served {
 public:
  explicit Served(MetricsServer::Limits limits = {}, tcp::endpoint at = {boost::asio::ip::make_address("127.0.0.1"), 0})
      : server_(io_, at, [this] { return "policyd_scrapes_total " + std::to_string(++renders_) + "\n"; }, limits) {}
  ~Served() { stop(); }

  policyd::Status start() {
    auto st = server_.start();
    run();
    return st;
  }
  policyd::Status start_or_retry() {
    auto st = server_.start_or_retry();
    run();
    return st;
  }
  // stop() on the io thread; true if io.run() then returned by itself (nothing left pending)
  bool stop() {
    if (!thread_.joinable()) return true;
    boost::asio::post(io_, [this] { server_.stop(); });
    bool returned = ran_out_.wait_for(5s) == std::future_status::ready;
    if (!returned) io_.stop();
    thread_.join();
    return returned;
  }
  template <typename T>
  T on_io(std::function<T()> f) {
    std::promise<T> p;
    boost::asio::post(io_, [&] { p.set_value(f()); });
    return p.get_future().get();
  }
  unsigned short port() { return on_io<unsigned short>([this] { return server_.local_endpoint().port(); }); }
  size_t connections() { return on_io<size_t>([this] { return server_.connections(); }); }
  bool listening() { return on_io<bool>([this] { return server_.listening(); }); }
  int renders() const { return renders_; }

 private:
  void run() {
    thread_ = std::thread([this] {
      io_.run();
      done_.set_value();
    });
  }
  boost::asio::io_context io_;
  std::atomic<int> renders_{0};
  MetricsServer server_;
  std::thread thread_;
  std::promise<void> done_;
  std::future<void> ran_out_ = done_.get_future();
};

// A blocking client connection.
struct Client {
  boost::asio::io_context io;
  tcp::socket socket{io};
  boost::beast::flat_buffer buffer;
  explicit Client(unsigned short port) { socket.connect({boost::asio::ip::make_address("127.0.0.1"), port}); }
  void send(const std::string& raw) { boost::asio::write(socket, boost::asio::buffer(raw)); }
  http::response<http::string_body> response(bool head = false) {
    http::response_parser<http::string_body> p;
    p.skip(head);  // a HEAD response has a Content-Length and no body
    http::read(socket, buffer, p);
    return p.release();
  }
  // true if the server closed the connection (EOF or reset) within `within`
  bool closed(std::chrono::milliseconds within = 2s) {
    timeval tv{static_cast<time_t>(within.count() / 1000), static_cast<suseconds_t>((within.count() % 1000) * 1000)};
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char c;
    boost::system::error_code ec;
    socket.read_some(boost::asio::buffer(&c, 1), ec);
    return ec == boost::asio::error::eof || ec == boost::asio::error::connection_reset;
  }
};

std::string get(const std::string& target, const std::string& method = "GET", const std::string& extra = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds within = 3s) {
  auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

}  // namespace

TEST_CASE("GET /metrics: 200, the exposition's content type, what render returned", "[metrics][server]") {
  Served s;
  REQUIRE(s.start());
  Client c(s.port());
  c.send(get("/metrics"));
  auto r = c.response();
  CHECK(r.result() == http::status::ok);
  CHECK(r[http::field::content_type] == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(r.body() == "policyd_scrapes_total 1\n");
  CHECK(r.keep_alive());

  SECTION("kept alive: the next request on the connection is served, rendered afresh") {
    c.send(get("/metrics?x=1"));  // a query string is ignored
    auto r2 = c.response();
    CHECK(r2.result() == http::status::ok);
    CHECK(r2.body() == "policyd_scrapes_total 2\n");
  }
  SECTION("HEAD: the length GET would have, no body") {
    c.send(get("/metrics", "HEAD"));
    auto h = c.response(true);
    CHECK(h.result() == http::status::ok);
    CHECK(h[http::field::content_length] == "24");
    CHECK(h.body().empty());
    c.send(get("/metrics"));  // and the connection is still in step
    CHECK(c.response().body() == "policyd_scrapes_total 3\n");
  }
  SECTION("Connection: close is honoured") {
    c.send(get("/metrics", "GET", "Connection: close\r\n"));
    CHECK(c.response().result() == http::status::ok);
    CHECK(c.closed());
  }
}

TEST_CASE("other paths are 404, other methods 405 with Allow", "[metrics][server]") {
  Served s;
  REQUIRE(s.start());
  Client c(s.port());
  c.send(get("/"));
  CHECK(c.response().result() == http::status::not_found);
  c.send(get("/metrics/x"));
  CHECK(c.response().result() == http::status::not_found);
  c.send(get("/metrics", "POST", "Content-Length: 0\r\n"));
  auto r = c.response();
  CHECK(r.result() == http::status::method_not_allowed);
  CHECK(r[http::field::allow] == "GET, HEAD");
  c.send(get("/metrics", "DELETE"));
  CHECK(c.response().result() == http::status::method_not_allowed);
  CHECK(s.renders() == 0);
}

TEST_CASE("bounded requests: an over-long head is 431, a body or garbage 400, then closed", "[metrics][server]") {
  Served s(MetricsServer::Limits{.max_head_bytes = 1024});
  REQUIRE(s.start());
  SECTION("head over the limit") {
    Client c(s.port());
    c.send(get("/metrics", "GET", "X-Filler: " + std::string(2000, 'a') + "\r\n"));
    CHECK(c.response().result() == http::status::request_header_fields_too_large);
    CHECK(c.closed());
  }
  SECTION("a body") {
    Client c(s.port());
    c.send(get("/metrics", "GET", "Content-Length: 5\r\n") + "hello");
    CHECK(c.response().result() == http::status::bad_request);
    CHECK(c.closed());
  }
  SECTION("not HTTP") {
    Client c(s.port());
    c.send("\x16\x03\x01 not http at all\r\n\r\n");
    CHECK(c.response().result() == http::status::bad_request);
    CHECK(c.closed());
  }
  CHECK(s.renders() == 0);
}

TEST_CASE("an idle connection is closed at the timeout", "[metrics][server]") {
  Served s(MetricsServer::Limits{.timeout = 300ms});
  REQUIRE(s.start());
  Client c(s.port());
  c.send("GET /metr");  // half a request, then nothing
  auto t0 = std::chrono::steady_clock::now();
  CHECK(c.closed(3s));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  CHECK(eventually([&] { return s.connections() == 0; }));
}

TEST_CASE("at most max_connections at once: more are closed as they come", "[metrics][server]") {
  Served s(MetricsServer::Limits{.max_connections = 3});
  REQUIRE(s.start());
  std::vector<std::unique_ptr<Client>> held;
  for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<Client>(s.port()));
  REQUIRE(eventually([&] { return s.connections() == 3; }));
  Client extra(s.port());
  CHECK(extra.closed());
  CHECK(s.connections() == 3);
  // the held ones still work, and a slot that frees up is usable again
  held[0]->send(get("/metrics"));
  CHECK(held[0]->response().result() == http::status::ok);
  held.pop_back();
  REQUIRE(eventually([&] { return s.connections() == 2; }));
  Client again(s.port());
  again.send(get("/metrics"));
  CHECK(again.response().result() == http::status::ok);
}

TEST_CASE("stop() closes the listener and every connection; the io loop returns by itself", "[metrics][server]") {
  Served s;
  REQUIRE(s.start());
  const auto port = s.port();
  Client idle(port);
  Client mid(port);
  mid.send("GET /metrics HTTP/1.1\r\n");  // a head in progress
  REQUIRE(eventually([&] { return s.connections() == 2; }));
  CHECK(s.stop());
  CHECK(idle.closed());
  CHECK(mid.closed());
  boost::asio::io_context io;
  tcp::socket probe(io);
  boost::system::error_code ec;
  probe.connect({boost::asio::ip::make_address("127.0.0.1"), port}, ec);
  CHECK(ec);  // nothing listens any more
}

TEST_CASE("an address in use: the error names it; start_or_retry binds once it is free", "[metrics][server]") {
  boost::asio::io_context io;
  tcp::acceptor holder(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const tcp::endpoint taken = holder.local_endpoint();
  Served s(MetricsServer::Limits{.retry_bind = 100ms}, taken);
  auto st = s.start_or_retry();
  REQUIRE(!st);
  INFO(st.error().message);
  CHECK(st.error().message.find("127.0.0.1:" + std::to_string(taken.port())) != std::string::npos);
  CHECK(st.error().message.find("in use") != std::string::npos);
  CHECK(!s.listening());
  holder.close();
  REQUIRE(eventually([&] { return s.listening(); }));
  Client c(taken.port());
  c.send(get("/metrics"));
  CHECK(c.response().result() == http::status::ok);
}

TEST_CASE("IPv6 loopback", "[metrics][server]") {
  boost::system::error_code ec;
  boost::asio::io_context io;
  tcp::acceptor probe(io);
  probe.open(tcp::v6(), ec);
  if (!ec) probe.bind({boost::asio::ip::make_address("::1"), 0}, ec);
  // A missing prerequisite fails the run, naming it (no skip).
  if (ec) FAIL("this test needs IPv6 on the loopback (::1): " << ec.message()
               << " (sysctl net.ipv6.conf.lo.disable_ipv6=0)");
  probe.close();
  Served s(MetricsServer::Limits{}, {boost::asio::ip::make_address("::1"), 0});
  REQUIRE(s.start());
  tcp::socket sock(io);
  sock.connect({boost::asio::ip::make_address("::1"), s.port()});
  boost::asio::write(sock, boost::asio::buffer(get("/metrics")));
  boost::beast::flat_buffer buf;
  http::response<http::string_body> r;
  http::read(sock, buf, r);
  CHECK(r.result() == http::status::ok);
}

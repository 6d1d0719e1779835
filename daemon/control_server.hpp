// ControlServer: the control socket. A local stream socket that only root, the daemon's own
// user and members of one group may use (peer credentials are checked on every connection);
// each connection carries newline-delimited JSON requests (control.hpp), dispatched to the
// command registry on the io thread, one response line each, in order.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>

#include "chain/base/result.hpp"
#include "daemon/control.hpp"

namespace policyd::control {

class ControlServer {
 public:
  class Session;

  // A streaming command (e.g. `events --follow`): answers like a Handler, and may keep
  // `session` to write further lines (Session::write) until it closes.
  using StreamHandler =
      std::function<Response(const nlohmann::json& arguments, const std::shared_ptr<Session>& session)>;

  // `registry` is the daemon's and must outlive the server; commands added to it later are
  // served too. `group`: the group whose members may use the socket besides root and the
  // daemon's own user.
  ControlServer(boost::asio::io_context& io, std::string socket_path, Registry& registry,
                std::string group = "policyd");
  ~ControlServer();  // stop()
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the parent directory if missing (0750, group `group` if it exists), replaces a
  // stale socket file (one nobody listens on; a live one is an error), binds, makes the
  // socket 0660 root:group (0600 when the group does not exist) and starts accepting.
  Status start();
  // Closes the acceptor and every session and unlinks the socket; pending operations are
  // cancelled, so io_context::run() returns once the daemon's other sources are stopped too.
  void stop();

  // Adds (or replaces) a command in the registry.
  void add(std::string name, Handler handler);
  void add_stream(std::string name, StreamHandler handler);

  const std::string& socket_path() const { return path_; }
  bool listening() const { return acceptor_.is_open(); }
  std::size_t session_count() const { return sessions_.size(); }

 private:
  struct Key {
    explicit Key() = default;
  };

  void accept();
  bool permitted(uid_t uid, gid_t gid) const;
  Response dispatch(Session& session, std::string_view line);
  std::string known_commands() const;
  void forget(Session* session);

  std::string path_;
  Registry& registry_;
  std::map<std::string, StreamHandler> streams_;
  std::string group_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer accept_retry_;
  std::set<std::shared_ptr<Session>> sessions_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // completion handlers check it
  bool bound_ = false;
  dev_t bound_dev_ = 0;
  ino_t bound_ino_ = 0;
};

// One accepted connection. Made by the server; a streaming handler may keep a shared_ptr.
class ControlServer::Session : public std::enable_shared_from_this<ControlServer::Session> {
 public:
  Session(Key, boost::asio::local::stream_protocol::socket socket, ControlServer* server);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Queues one JSON line. False (and the line dropped) when the session is closed or the
  // peer has more than kMaxBacklog bytes unread.
  bool write(const nlohmann::json& message);
  bool is_open() const { return open_; }
  // Closes at once, dropping lines not yet written.
  void close();
  // Closes once the lines already queued (and the pending response) are written.
  void finish();
  // Called once when the session closes (peer gone, error, close(), server stop).
  void on_close(std::function<void()> callback);

  uid_t peer_uid() const { return uid_; }
  pid_t peer_pid() const { return pid_; }

  static constexpr std::size_t kMaxBacklog = std::size_t{8} << 20;

 private:
  friend class ControlServer;

  void start();
  void read();
  void on_read(std::size_t n);
  void queue(std::string line);
  void write_next();
  void refuse(int result, std::string text);

  boost::asio::local::stream_protocol::socket socket_;
  ControlServer* server_;  // null once the server stopped
  bool open_ = true;
  bool reading_ = false;
  bool writing_ = false;
  bool close_after_write_ = false;
  bool holding_ = false;
  uid_t uid_ = static_cast<uid_t>(-1);
  gid_t gid_ = static_cast<gid_t>(-1);
  pid_t pid_ = 0;
  std::string in_;
  std::vector<char> chunk_;
  std::deque<std::string> out_;
  std::vector<std::string> held_;
  std::size_t out_bytes_ = 0;
  std::vector<std::function<void()>> on_close_;
};

}  // namespace policyd::control

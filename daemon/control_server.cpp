#include "daemon/control_server.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace policyd::control {

namespace {

using boost::system::error_code;
using stream = boost::asio::local::stream_protocol;

constexpr std::size_t kReadChunk = 64 * 1024;

std::shared_ptr<spdlog::logger> ctl_log() { return spdlog::get("ctl"); }

std::string dump_line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

nlohmann::json to_json(const Response& r) {
  return nlohmann::json{{"result", r.result},
                        {"text", r.text},
                        {"arguments", r.arguments.is_null() ? nlohmann::json::object() : r.arguments}};
}

Response failure(int result, std::string text) {
  Response r;
  r.result = result;
  r.text = std::move(text);
  return r;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

std::optional<gid_t> group_id(const std::string& name) {
  std::vector<char> buf(16 * 1024);
  for (;;) {
    struct group gr {};
    struct group* found = nullptr;
    int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (std::size_t{1} << 24)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (rc != 0 || found == nullptr) return std::nullopt;
    return gr.gr_gid;
  }
}

// The groups of the user `uid` as the user database has them (primary and supplementary).
std::vector<gid_t> user_groups(uid_t uid) {
  std::vector<char> buf(16 * 1024);
  struct passwd pw {};
  struct passwd* found = nullptr;
  for (;;) {
    int rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
    if (rc == ERANGE && buf.size() < (std::size_t{1} << 24)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (rc != 0 || found == nullptr) return {};
    break;
  }
  int n = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  for (int tries = 0; tries < 4; ++tries) {
    int want = n;
    if (::getgrouplist(pw.pw_name, pw.pw_gid, groups.data(), &want) != -1) {
      groups.resize(static_cast<std::size_t>(want));
      return groups;
    }
    n = std::max(want, n * 2);
    groups.resize(static_cast<std::size_t>(n));
  }
  return {};
}

// Whether something accepts connections on the socket file `path`: 0 when nothing does
// (a stale file), 1 when something does, -errno when it cannot be told.
int probe_listener(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int err = errno;
  ::close(fd);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) return 1;  // EAGAIN: its backlog is full
  if (err == ECONNREFUSED || err == ENOENT) return 0;
  return -err;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// ControlServer

ControlServer::ControlServer(boost::asio::io_context& io, std::string socket_path, Registry& registry,
                             std::string group)
    : path_(std::move(socket_path)), registry_(registry), group_(std::move(group)), acceptor_(io), accept_retry_(io) {}

ControlServer::~ControlServer() { stop(); }

void ControlServer::add(std::string name, Handler handler) { registry_[std::move(name)] = std::move(handler); }

void ControlServer::add_stream(std::string name, StreamHandler handler) {
  streams_[std::move(name)] = std::move(handler);
}

Status ControlServer::start() {
  namespace fs = std::filesystem;
  if (acceptor_.is_open()) return make_error(fmt::format("the control socket {} is already open", path_));
  if (path_.empty()) return make_error("no control socket path");
  if (path_.size() >= sizeof(sockaddr_un::sun_path))
    return make_error(fmt::format("control socket path {} is too long ({} bytes; at most {})", path_, path_.size(),
                                  sizeof(sockaddr_un::sun_path) - 1));
  const auto gid = group_id(group_);

  const fs::path parent = fs::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    if (!fs::exists(parent, ec)) {
      if (!fs::create_directories(parent, ec) && ec)
        return make_error(fmt::format("cannot create {}: {}", parent.string(), ec.message()));
      ::chmod(parent.c_str(), 0750);
      if (gid && ::chown(parent.c_str(), static_cast<uid_t>(-1), *gid) != 0 && ctl_log())
        ctl_log()->warn("cannot give {} to group {}: {}", parent.string(), group_, std::strerror(errno));
    }
  }

  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(fmt::format("{} exists and is not a socket; not replacing it", path_));
    int live = probe_listener(path_);
    if (live > 0) return make_error(fmt::format("another policyd is serving {}", path_));
    if (live < 0) return make_error(fmt::format("cannot tell whether {} is in use: {}", path_, std::strerror(-live)));
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT)
      return make_error(fmt::format("cannot remove the stale socket {}: {}", path_, std::strerror(errno)));
    if (auto log = ctl_log()) log->info("removed the stale control socket {}", path_);
  }

  error_code ec;
  acceptor_.open(stream(), ec);
  if (!ec) acceptor_.bind(stream::endpoint(path_), ec);
  if (!ec) acceptor_.listen(boost::asio::socket_base::max_listen_connections, ec);
  if (ec) {
    error_code unused;
    acceptor_.close(unused);
    return make_error(fmt::format("cannot listen on {}: {}", path_, ec.message()));
  }
  bound_ = true;
  if (::lstat(path_.c_str(), &st) == 0) {
    bound_dev_ = st.st_dev;
    bound_ino_ = st.st_ino;
  }

  mode_t mode = 0600;
  if (gid) {
    if (::chown(path_.c_str(), static_cast<uid_t>(-1), *gid) == 0)
      mode = 0660;
    else if (auto log = ctl_log())
      log->warn("cannot give {} to group {}: {}; only root and uid {} may use it", path_, group_, std::strerror(errno),
                ::geteuid());
  }
  if (::chmod(path_.c_str(), mode) != 0) {
    Error e = make_error(fmt::format("chmod {:o} {}: {}", mode, path_, std::strerror(errno)));
    stop();
    return e;
  }
  if (auto log = ctl_log()) {
    if (mode == 0660)
      log->info("control socket {} (root and group {})", path_, group_);
    else
      log->info("control socket {} (root only: group {} does not exist)", path_, group_);
  }
  accept();
  return Ok{};
}

void ControlServer::stop() {
  error_code ec;
  acceptor_.close(ec);
  accept_retry_.cancel();
  auto sessions = std::move(sessions_);
  sessions_.clear();
  for (const auto& s : sessions) {
    s->server_ = nullptr;
    s->close();
  }
  if (bound_) {
    struct stat st {};
    // Only our socket: if something replaced the file meanwhile, it is not ours to remove.
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == bound_dev_ && st.st_ino == bound_ino_) ::unlink(path_.c_str());
    bound_ = false;
    if (auto log = ctl_log()) log->debug("control socket {} closed", path_);
  }
}

void ControlServer::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<char>(alive_)](const error_code& ec, stream::socket socket) {
    if (alive.expired() || ec == boost::asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (ec) {
      // E.g. EMFILE: retry shortly instead of spinning.
      if (auto log = ctl_log()) log->warn("control socket: accept: {}", ec.message());
      accept_retry_.expires_after(std::chrono::milliseconds(100));
      accept_retry_.async_wait([this, alive](const error_code& wait_ec) {
        if (alive.expired() || wait_ec || !acceptor_.is_open()) return;
        accept();
      });
      return;
    }
    auto session = std::make_shared<Session>(Key{}, std::move(socket), this);
    sessions_.insert(session);
    session->start();
    accept();
  });
}

void ControlServer::forget(Session* session) {
  for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
    if (it->get() == session) {
      sessions_.erase(it);
      return;
    }
}

bool ControlServer::permitted(uid_t uid, gid_t gid) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  const auto group = group_id(group_);
  if (!group) return false;
  if (gid == *group) return true;
  const auto groups = user_groups(uid);
  return std::find(groups.begin(), groups.end(), *group) != groups.end();
}

std::string ControlServer::known_commands() const {
  std::vector<std::string> names;
  for (const auto& [name, handler] : registry_) names.push_back(name);
  for (const auto& [name, handler] : streams_) names.push_back(name);
  std::sort(names.begin(), names.end());
  if (names.empty()) return "none";
  return fmt::format("{}", fmt::join(names, ", "));
}

Response ControlServer::dispatch(Session& session, std::string_view line) {
  nlohmann::json request;
  try {
    request = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    return failure(1, fmt::format("malformed request: {}", e.what()));
  }
  const auto command = request.is_object() ? request.find("command") : request.end();
  if (!request.is_object() || command == request.end() || !command->is_string())
    return failure(1, R"(malformed request: expected {"command": NAME, "arguments": {...}})");
  nlohmann::json arguments = nlohmann::json::object();
  if (auto a = request.find("arguments"); a != request.end() && !a->is_null()) {
    if (!a->is_object()) return failure(1, "malformed request: \"arguments\" must be an object");
    arguments = std::move(*a);
  }
  const std::string name = command->get<std::string>();

  const auto started = std::chrono::steady_clock::now();
  Response response;
  try {
    if (auto h = registry_.find(name); h != registry_.end()) {
      Handler handler = h->second;  // a copy: the handler may change the registry
      response = handler(arguments);
    } else if (auto s = streams_.find(name); s != streams_.end()) {
      StreamHandler handler = s->second;
      response = handler(arguments, session.shared_from_this());
    } else {
      response = failure(1, fmt::format("unknown command '{}' (known: {})", name, known_commands()));
    }
  } catch (const std::exception& e) {
    response = failure(2, fmt::format("internal error in '{}': {}", name, e.what()));
    if (auto log = ctl_log()) log->error("{}", response.text);
  }
  if (auto log = ctl_log()) {
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
    if (response.result == 0)
      log->debug("uid {} pid {}: {} -> 0 ({} us)", session.peer_uid(), session.peer_pid(), name, us.count());
    else
      log->info("uid {} pid {}: {} -> {}: {}", session.peer_uid(), session.peer_pid(), name, response.result,
                response.text);
  }
  return response;
}

// ---------------------------------------------------------------------------------------
// Session

ControlServer::Session::Session(Key, stream::socket socket, ControlServer* server)
    : socket_(std::move(socket)), server_(server), chunk_(kReadChunk) {}

void ControlServer::Session::start() {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket_.native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    refuse(2, fmt::format("permission denied: cannot read the peer's credentials: {}", std::strerror(errno)));
    return;
  }
  uid_ = cred.uid;
  gid_ = cred.gid;
  pid_ = cred.pid;
  if (!server_->permitted(uid_, gid_)) {
    if (auto log = ctl_log()) log->warn("refused a control connection from uid {} pid {}", uid_, pid_);
    refuse(2, fmt::format("permission denied: uid {} is not root and not in group {}", uid_, server_->group_));
    return;
  }
  if (auto log = ctl_log()) log->debug("control connection from uid {} pid {}", uid_, pid_);
  read();
}

bool ControlServer::Session::write(const nlohmann::json& message) {
  if (!open_ || close_after_write_ || out_bytes_ > kMaxBacklog) return false;
  if (holding_) {
    held_.push_back(dump_line(message));
    return true;
  }
  queue(dump_line(message));
  return true;
}

void ControlServer::Session::on_close(std::function<void()> callback) {
  if (!open_) {
    callback();
    return;
  }
  on_close_.push_back(std::move(callback));
}

void ControlServer::Session::close() {
  if (!open_) return;
  open_ = false;
  auto self = shared_from_this();
  error_code ec;
  socket_.shutdown(stream::socket::shutdown_both, ec);
  socket_.close(ec);
  if (server_) {
    server_->forget(this);
    server_ = nullptr;
  }
  auto callbacks = std::move(on_close_);
  on_close_.clear();
  for (auto& cb : callbacks) cb();
}

void ControlServer::Session::finish() {
  if (!open_) return;
  close_after_write_ = true;
  if (!writing_ && out_.empty() && !holding_) close();
}

void ControlServer::Session::refuse(int result, std::string text) {
  queue(dump_line(to_json(failure(result, std::move(text)))));
  close_after_write_ = true;
}

void ControlServer::Session::read() {
  if (!open_ || reading_ || close_after_write_) return;
  reading_ = true;
  socket_.async_read_some(boost::asio::buffer(chunk_),
                          [self = shared_from_this()](const error_code& ec, std::size_t n) {
                            self->reading_ = false;
                            if (!self->open_) return;
                            if (ec == boost::asio::error::eof) {
                              // The peer is done sending: answer what it sent (a last line may lack its newline),
                              // then close.
                              self->chunk_[0] = '\n';
                              self->on_read(blank(self->in_) ? 0 : 1);
                              if (self->open_) {
                                self->close_after_write_ = true;
                                if (!self->writing_) self->close();
                              }
                              return;
                            }
                            if (ec) {
                              self->close();
                              return;
                            }
                            self->on_read(n);
                          });
}

void ControlServer::Session::on_read(std::size_t n) {
  const std::size_t scan_from = in_.size();
  in_.append(chunk_.data(), n);
  std::size_t start = 0;
  std::size_t from = scan_from;
  while (open_) {
    const std::size_t nl = in_.find('\n', from);
    if (nl == std::string::npos) break;
    if (nl - start > kMaxRequestLine) break;
    std::string_view line(in_.data() + start, nl - start);
    start = nl + 1;
    from = start;
    if (blank(line)) continue;
    if (server_ == nullptr) {
      close();
      return;
    }
    holding_ = true;  // lines a streaming handler writes during the call follow its response
    Response response = server_->dispatch(*this, line);
    holding_ = false;
    auto held = std::move(held_);
    held_.clear();
    if (!open_) return;
    queue(dump_line(to_json(response)));
    for (auto& l : held) queue(std::move(l));
  }
  if (!open_) return;
  in_.erase(0, start);
  if (in_.size() > kMaxRequestLine) {
    in_.clear();
    in_.shrink_to_fit();
    refuse(1, fmt::format("request line longer than {} MiB; closing the connection", kMaxRequestLine >> 20));
    return;
  }
  if (out_.empty()) read();  // otherwise once the responses are written (write_next)
}

void ControlServer::Session::queue(std::string line) {
  line.push_back('\n');
  out_bytes_ += line.size();
  out_.push_back(std::move(line));
  write_next();
}

void ControlServer::Session::write_next() {
  if (writing_ || out_.empty() || !open_) return;
  writing_ = true;
  boost::asio::async_write(socket_, boost::asio::buffer(out_.front()),
                           [self = shared_from_this()](const error_code& ec, std::size_t) {
                             self->writing_ = false;
                             if (!self->out_.empty()) {
                               self->out_bytes_ -= self->out_.front().size();
                               self->out_.pop_front();
                             }
                             if (!self->open_) return;
                             if (ec) {
                               self->close();
                               return;
                             }
                             if (!self->out_.empty()) {
                               self->write_next();
                               return;
                             }
                             if (self->close_after_write_) {
                               self->close();
                               return;
                             }
                             self->read();
                           });
}

}  // namespace policyd::control

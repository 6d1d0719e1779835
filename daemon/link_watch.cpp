#include "daemon/link_watch.hpp"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace policyd {

const char* link_event_name(LinkEvent::Kind kind) {
  switch (kind) {
    case LinkEvent::Kind::LinkNew: return "link new";
    case LinkEvent::Kind::LinkGone: return "link deleted";
    case LinkEvent::Kind::QdiscGone: return "qdisc deleted";
    case LinkEvent::Kind::FilterGone: return "filter deleted";
    case LinkEvent::Kind::Overrun: return "notifications lost";
  }
  return "?";
}

LinkWatch::LinkWatch(boost::asio::io_context& io, std::function<void(const LinkEvent&)> on_event)
    : on_event_(std::move(on_event)), fd_(io) {}

LinkWatch::~LinkWatch() { stop(); }

Status LinkWatch::start() {
  int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return make_error(fmt::format("rtnetlink socket: {}", std::strerror(errno)));
  // A burst (hundreds of containers' veths at once) must not overflow the socket: ask for a
  // large buffer (FORCE: above rmem_max, we are privileged); an overflow is survivable anyway.
  int rcvbuf = 4 << 20;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
    (void)::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_LINK | RTMGRP_TC;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    int err = errno;
    ::close(fd);
    return make_error(fmt::format("rtnetlink: subscribing to link and tc notifications: {}", std::strerror(err)));
  }
  fd_.assign(fd);
  wait();
  return Ok{};
}

void LinkWatch::stop() {
  boost::system::error_code ec;
  if (fd_.is_open()) fd_.close(ec);
}

void LinkWatch::wait() {
  fd_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;
    read_messages();
    if (fd_.is_open()) wait();
  });
}

void LinkWatch::read_messages() {
  alignas(nlmsghdr) char buf[64 * 1024];
  // bounded: at most this many reads per wakeup, so a storm of notifications cannot starve
  // the io loop's other work (the rest is read on the next wakeup)
  for (int reads = 0; reads < 64 && fd_.is_open(); ++reads) {
    ssize_t n = ::recv(fd_.native_handle(), buf, sizeof(buf), MSG_DONTWAIT);
    auto now = std::chrono::steady_clock::now();
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {
        on_event_(LinkEvent{LinkEvent::Kind::Overrun, 0, {}, now});
        continue;
      }
      return;  // EAGAIN: drained
    }
    if (n == 0) return;
    int len = static_cast<int>(n);
// NLMSG_OK (uapi) compares the message's __u32 length with the int it counts down.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      switch (h->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK: {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(ifinfomsg))) break;
          auto* ifi = static_cast<ifinfomsg*>(NLMSG_DATA(h));
          LinkEvent ev{h->nlmsg_type == RTM_NEWLINK ? LinkEvent::Kind::LinkNew : LinkEvent::Kind::LinkGone,
                       ifi->ifi_index, {}, now};
          int alen = static_cast<int>(IFLA_PAYLOAD(h));
          for (auto* a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen))
            if (a->rta_type == IFLA_IFNAME)
              ev.ifname.assign(static_cast<const char*>(RTA_DATA(a)),
                               strnlen(static_cast<const char*>(RTA_DATA(a)), RTA_PAYLOAD(a)));
          on_event_(ev);
          break;
        }
        case RTM_DELQDISC:
        case RTM_DELTFILTER: {
          if (h->nlmsg_len < NLMSG_LENGTH(sizeof(tcmsg))) break;
          auto* tc = static_cast<tcmsg*>(NLMSG_DATA(h));
          on_event_(LinkEvent{
              h->nlmsg_type == RTM_DELQDISC ? LinkEvent::Kind::QdiscGone : LinkEvent::Kind::FilterGone,
              tc->tcm_ifindex, {}, now});
          break;
        }
        default:
          break;  // new qdiscs and filters (ours among them), addresses: nothing to do
      }
    }
#pragma GCC diagnostic pop
  }
}

}  // namespace policyd

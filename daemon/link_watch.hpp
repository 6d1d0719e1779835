// LinkWatch: rtnetlink notifications in the io loop. Links that appear, go away or are
// renamed, and clsact qdiscs or TC filters that are deleted (by anyone: `tc qdisc del dev X
// clsact`) are reported by interface index; the daemon decides what to do (attach, forget,
// re-attach, detach). Nothing here changes the kernel.
//
// Notifications are a hint, never the truth: the handler re-reads the interface's state
// (name, our filter) before acting, so duplicates, reordering and our own changes echoed
// back are harmless. If the socket's buffer overflowed (ENOBUFS), messages were lost and the
// handler is asked to look at every interface.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include "chain/base/result.hpp"

namespace policyd {

struct LinkEvent {
  enum class Kind {
    LinkNew,       // RTM_NEWLINK: appeared, renamed, or changed state
    LinkGone,      // RTM_DELLINK: deleted or moved to another namespace
    QdiscGone,     // RTM_DELQDISC
    FilterGone,    // RTM_DELTFILTER
    Overrun,       // messages were lost: look at every interface (ifindex 0)
  };
  Kind kind;
  int ifindex = 0;
  std::string ifname;  // link messages: the name the message carries (empty otherwise)
  std::chrono::steady_clock::time_point received;
};

class LinkWatch {
 public:
  LinkWatch(boost::asio::io_context& io, std::function<void(const LinkEvent&)> on_event);
  ~LinkWatch();
  LinkWatch(const LinkWatch&) = delete;
  LinkWatch& operator=(const LinkWatch&) = delete;

  // Opens a NETLINK_ROUTE socket subscribed to link and TC notifications.
  Status start();
  void stop();

 private:
  void wait();
  void read_messages();

  std::function<void(const LinkEvent&)> on_event_;
  boost::asio::posix::stream_descriptor fd_;
};

const char* link_event_name(LinkEvent::Kind kind);

}  // namespace policyd

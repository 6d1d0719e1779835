// TC attachment (clsact + cls_bpf through libbpf's bpf_tc_*): policyd's one filter per hook,
// at a constant handle and priority so a restart or a new build replaces it in place.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "chain/base/result.hpp"

namespace policyd::chain {

inline constexpr uint32_t kTcHandle = 0x5044;  // "PD"
inline constexpr uint32_t kTcPriority = 1;

struct Attachment {
  std::string ifname;
  int ifindex = 0;
  bool created_qdisc = false;  // ours to remove when detaching
};

// The interfaces a chain is attached to: an ingress program (the entry) and an egress one
// (what the server's packets say).
class TcAttachments {
 public:
  TcAttachments() = default;
  TcAttachments(const TcAttachments&) = delete;
  TcAttachments& operator=(const TcAttachments&) = delete;

  // Attaches (or replaces policyd's filters with) these programs; egress first, so from the
  // moment the entry program judges, the server's side is recorded.
  Status attach(const std::string& ifname, int ingress_fd, int egress_fd);
  Status detach(const std::string& ifname);
  // Every attachment removed (errors logged); the destructor does not: a chain left enforcing
  // after the process exits keeps its filters.
  void detach_all();
  const std::vector<Attachment>& list() const { return attached_; }
  // The link went away (its qdisc and filter with it): drop it from the list.
  void forget(int ifindex);
  void renamed(int ifindex, const std::string& ifname);

 private:
  std::vector<Attachment> attached_;
};

// The id of the program policyd's filter runs at an interface's ingress or egress (0: none).
uint32_t tc_ingress_prog(int ifindex);
uint32_t tc_egress_prog(int ifindex);
// Removes policyd's filters that run these programs (ids; 0: none) from every interface of
// this network namespace; returns the interfaces they were on.
std::vector<std::string> tc_detach_everywhere(uint32_t ingress_id, uint32_t egress_id);
// A program's id from its fd (0 if it has none).
uint32_t prog_id_of(int fd);

}  // namespace policyd::chain

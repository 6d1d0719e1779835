#include "chain/kernel/tc.hpp"

#include <errno.h>
#include <net/if.h>

#include <algorithm>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/kernel/loader.hpp"

namespace policyd::chain {

namespace {

// Attach fd at one hook of ifindex, replacing policyd's filter there.
int tc_attach(int ifindex, bpf_tc_attach_point where, int fd) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  return bpf_tc_attach(&hook, &opts);
}

uint32_t tc_prog_id(int ifindex, bpf_tc_attach_point where) {
  QuietLibbpf quiet;  // no qdisc or no filter is an answer here, not an error worth a log line
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  return bpf_tc_query(&hook, &opts) == 0 ? opts.prog_id : 0;
}

int tc_detach(int ifindex, bpf_tc_attach_point where) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  return bpf_tc_detach(&hook, &opts);
}

}  // namespace

uint32_t tc_ingress_prog(int ifindex) { return tc_prog_id(ifindex, BPF_TC_INGRESS); }
uint32_t tc_egress_prog(int ifindex) { return tc_prog_id(ifindex, BPF_TC_EGRESS); }

uint32_t prog_id_of(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

Status TcAttachments::attach(const std::string& ifname, int ingress_fd, int egress_fd) {
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return make_error(fmt::format("interface {}: {}", ifname, errstr(errno)));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  bool created = err == 0;
  if (err && err != -EEXIST)
    return make_error(fmt::format("creating clsact qdisc on {}: {}", ifname, errstr(err)));
  err = tc_attach(ifindex, BPF_TC_EGRESS, egress_fd);
  if (err) return make_error(fmt::format("attaching to {} egress: {}", ifname, errstr(err)));
  err = tc_attach(ifindex, BPF_TC_INGRESS, ingress_fd);
  if (err) return make_error(fmt::format("attaching to {} ingress: {}", ifname, errstr(err)));
  // known by index: a renamed link is the same attachment
  for (auto& a : attached_)
    if (a.ifindex == ifindex) {
      a.ifname = ifname;
      a.created_qdisc = a.created_qdisc || created;
      return Ok{};
    }
  attached_.push_back(Attachment{ifname, ifindex, created});
  return Ok{};
}

Status TcAttachments::detach(const std::string& ifname) {
  for (auto it = attached_.begin(); it != attached_.end(); ++it) {
    if (it->ifname != ifname) continue;
    int err = tc_detach(it->ifindex, BPF_TC_INGRESS);
    int eerr = tc_detach(it->ifindex, BPF_TC_EGRESS);
    if (!err) err = eerr;
    if (it->created_qdisc) {
      LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = it->ifindex,
                  .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
      bpf_tc_hook_destroy(&hook);
    }
    attached_.erase(it);
    if (err && err != -ENOENT && err != -ENODEV)
      return make_error(fmt::format("detaching from {}: {}", ifname, errstr(err)));
    return Ok{};
  }
  return Ok{};
}

void TcAttachments::detach_all() {
  while (!attached_.empty()) {
    auto name = attached_.back().ifname;
    if (auto st = detach(name); !st)
      if (auto log = spdlog::get("chain")) log->warn("{}", st.error().message);
    if (!attached_.empty() && attached_.back().ifname == name) attached_.pop_back();
  }
}

void TcAttachments::forget(int ifindex) {
  std::erase_if(attached_, [&](const Attachment& a) { return a.ifindex == ifindex; });
}

void TcAttachments::renamed(int ifindex, const std::string& ifname) {
  for (auto& a : attached_)
    if (a.ifindex == ifindex) a.ifname = ifname;
}

std::vector<std::string> tc_detach_everywhere(uint32_t ingress_id, uint32_t egress_id) {
  std::vector<std::string> detached;
  if (!ingress_id && !egress_id) return detached;
  QuietLibbpf quiet;
  struct if_nameindex* ifs = ::if_nameindex();
  for (auto* i = ifs; i && i->if_index; ++i) {
    int ifindex = static_cast<int>(i->if_index);
    bool any = false;
    if (ingress_id && tc_prog_id(ifindex, BPF_TC_INGRESS) == ingress_id && tc_detach(ifindex, BPF_TC_INGRESS) == 0)
      any = true;
    if (egress_id && tc_prog_id(ifindex, BPF_TC_EGRESS) == egress_id && tc_detach(ifindex, BPF_TC_EGRESS) == 0)
      any = true;
    if (any) detached.push_back(i->if_name);
  }
  if (ifs) if_freenameindex(ifs);
  return detached;
}

}  // namespace policyd::chain

#include "chain/kernel/policy_store.hpp"

#include <bpf/bpf.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace policyd::chain {
namespace {

// One map entry per chunk of the blob: header, source, text.
constexpr uint32_t kChunk = 4096;
constexpr char kMagic[8] = {'p', 'd', 'p', 'o', 'l', 'i', 'c', '1'};
constexpr size_t kMaxBlob = size_t{64} << 20;  // far above any policy the loader accepts

struct Header {
  char magic[8];
  uint32_t source_len;
  uint32_t text_len;
};

std::string errstr(int err) { return std::strerror(err); }

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

Status save_policy(const std::string& pin_dir, std::string_view source, std::string_view text) {
  const size_t blob_len = sizeof(Header) + source.size() + text.size();
  if (blob_len > kMaxBlob) return make_error(fmt::format("saving the policy in {}: {} bytes is too large", pin_dir, blob_len));
  std::vector<char> blob(blob_len);
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.source_len = static_cast<uint32_t>(source.size());
  h.text_len = static_cast<uint32_t>(text.size());
  std::memcpy(blob.data(), &h, sizeof h);
  std::copy(source.begin(), source.end(), blob.begin() + sizeof h);
  std::copy(text.begin(), text.end(), blob.begin() + static_cast<std::ptrdiff_t>(sizeof h + source.size()));
  const auto entries = static_cast<uint32_t>((blob_len + kChunk - 1) / kChunk);
  Fd map(bpf_map_create(BPF_MAP_TYPE_ARRAY, "pd_policy_src", sizeof(uint32_t), kChunk, entries, nullptr));
  if (map.get() < 0)
    return make_error(fmt::format("saving the policy in {}: creating its map: {}", pin_dir, errstr(errno)));
  std::vector<char> chunk(kChunk);
  for (uint32_t i = 0; i < entries; ++i) {
    const size_t at = size_t{i} * kChunk;
    const size_t n = std::min<size_t>(kChunk, blob_len - at);
    std::fill(chunk.begin(), chunk.end(), 0);
    std::memcpy(chunk.data(), blob.data() + at, n);
    if (bpf_map_update_elem(map.get(), &i, chunk.data(), BPF_ANY) != 0)
      return make_error(fmt::format("saving the policy in {}: writing its map: {}", pin_dir, errstr(errno)));
  }
  if (bpf_map_freeze(map.get()) != 0)
    return make_error(fmt::format("saving the policy in {}: freezing its map: {}", pin_dir, errstr(errno)));
  const std::string path = pin_dir + "/" + kPolicySourcePin;
  const std::string tmp = path + "_new";  // bpffs refuses names with a dot
  ::unlink(tmp.c_str());
  if (bpf_obj_pin(map.get(), tmp.c_str()) != 0)
    return make_error(fmt::format("saving the policy: pinning {}: {}", tmp, errstr(errno)));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return make_error(fmt::format("saving the policy: renaming {} to {}: {}", tmp, path, errstr(err)));
  }
  return Ok{};
}

Result<SavedPolicy> read_saved_policy(const std::string& pin_dir) {
  const std::string path = pin_dir + "/" + kPolicySourcePin;
  Fd map(bpf_obj_get(path.c_str()));
  if (map.get() < 0) return make_error(fmt::format("no policy saved at {}: {}", path, errstr(errno)));
  bpf_map_info info{};
  uint32_t len = sizeof info;
  if (bpf_obj_get_info_by_fd(map.get(), &info, &len) != 0)
    return make_error(fmt::format("reading {}: {}", path, errstr(errno)));
  if (info.type != BPF_MAP_TYPE_ARRAY || info.key_size != sizeof(uint32_t) || info.value_size != kChunk ||
      info.max_entries == 0)
    return make_error(fmt::format("{} is not a policy saved by policyd", path));
  std::vector<char> blob(size_t{info.max_entries} * kChunk);
  for (uint32_t i = 0; i < info.max_entries; ++i)
    if (bpf_map_lookup_elem(map.get(), &i, blob.data() + size_t{i} * kChunk) != 0)
      return make_error(fmt::format("reading {}: {}", path, errstr(errno)));
  Header h{};
  std::memcpy(&h, blob.data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 ||
      sizeof h + size_t{h.source_len} + h.text_len > blob.size())
    return make_error(fmt::format("{} is not a policy saved by policyd", path));
  SavedPolicy saved;
  saved.source.assign(blob.data() + sizeof h, h.source_len);
  saved.text.assign(blob.data() + sizeof h + h.source_len, h.text_len);
  return saved;
}

}  // namespace policyd::chain

/* bucket_test.bpf.c: a test-only TC program around pd_bucket.h, the rate limit's token
 * arithmetic, with the clock given by the test: it reads a bucket, a limit and `now` from
 * bucket_io, takes one token, and writes the bucket, the answer and the wait back. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "pd_bucket.h"

struct bucket_io {
	__u64 credit;
	__u64 last_ns;
	struct pd_rl_limit limit;
	__u64 now;
	__u64 wait_ns;
	__s32 taken;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bucket_io);
} bucket_io SEC(".maps");

SEC("tc")
int bucket_take(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct bucket_io *io = bpf_map_lookup_elem(&bucket_io, &zero);
	if (!io)
		return TC_ACT_SHOT;
	struct pd_rl_bucket b = { .credit = io->credit, .last_ns = io->last_ns };
	__u64 wait = 0;
	io->taken = pd_bucket_take(&b, &io->limit, io->now, &wait);
	io->credit = b.credit;
	io->last_ns = b.last_ns;
	io->wait_ns = wait;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

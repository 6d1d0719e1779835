/* sha2_test.bpf.c: a test-only TC program around pd_sha2.h. It takes the message, its
 * offset and length, the algorithm, the midstates and the expected MAC (and its length) from sha2_in, and
 * writes the return value, the MAC and the compare's answer to sha2_out. */
#include "pd_sha2.h"

struct sha2_test_in {
	__u32 off;
	__u32 len;
	__u32 alg;
	__u32 want_len;
	__u64 inner[8];
	__u64 outer[8];
	__u8 want[64];
	__u8 buf[PD_HEAD_MAX + PD_HEAD_SLACK];
};

struct sha2_test_out {
	__s32 ret;
	__s32 equal;
	__u8 mac[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sha2_test_in);
} sha2_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pd_sha2);
} sha2_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sha2_test_out);
} sha2_out SEC(".maps");

SEC("tc")
int pd_sha2_test(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct sha2_test_in *in = bpf_map_lookup_elem(&sha2_in, &zero);
	struct pd_sha2 *s = bpf_map_lookup_elem(&sha2_state, &zero);
	struct sha2_test_out *out = bpf_map_lookup_elem(&sha2_out, &zero);
	if (!in || !s || !out)
		return TC_ACT_SHOT;
	out->ret = pd_hmac_sha2(s, in->buf, in->off, in->len, in->alg, in->inner, in->outer);
	out->equal = out->ret == 0 && pd_sha2_equal(s, in->want, in->want_len);
	__builtin_memcpy(out->mac, s->mac, sizeof(out->mac));
	return TC_ACT_OK;
}

/* pd_segment.h: what the server's TCP would do with a segment, for the entry program.
 *
 * A gateway that judges bytes the server never acts on can be talked past: a segment the
 * server discards (bad checksum, TTL expiring here, no ACK, an MD5/AO option it does not
 * expect, a stale timestamp) must not be accumulated or judged, and bytes that arrive again
 * for a range already judged must be the bytes that were judged (pd_digest). */
#ifndef PD_SEGMENT_H
#define PD_SEGMENT_H

#include <bpf/bpf_core_read.h>
#include "pd_common.h"
#include "pd_parse.h"
#include "pd_reply.h"

/* ---- has the kernel already verified (or will it not check) the TCP checksum? -------
 * ip_summed of the sk_buff, read through the kernel's own context (CO-RE):
 * CHECKSUM_UNNECESSARY (the NIC or veth verified it) and CHECKSUM_PARTIAL (made on this
 * host, filled in on output; the receiving stack trusts it) are not checked again;
 * CHECKSUM_NONE and CHECKSUM_COMPLETE are, as the server's stack will. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

struct sk_buff___pd {
	__u8 ip_summed : 2;
} __attribute__((preserve_access_index));

#define PD_CHECKSUM_UNNECESSARY 1
#define PD_CHECKSUM_PARTIAL 3

PD_INLINE int pd_csum_trusted(struct __sk_buff *skb)
{
	struct sk_buff___pd *k = bpf_cast_to_kern_ctx(skb);
	__u32 s = BPF_CORE_READ_BITFIELD(k, ip_summed);
	return s == PD_CHECKSUM_UNNECESSARY || s == PD_CHECKSUM_PARTIAL;
}

/* 1: the TCP checksum of the segment in ctx (header + payload + pseudo-header) holds. */
PD_INLINE int pd_tcp_csum_ok(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	__u32 tcp_len = (__u32)ctx->payload_off - ctx->l4_off + ctx->payload_len;
	__u32 sum;
	if (tcp_len > 0xffff || pd_sum_bytes(skb, ctx->l4_off, tcp_len, &sum) < 0)
		return 0;
	return pd_csum_fold(pd_csum_add(pd_pseudo_sum(ctx, 0, tcp_len), sum)) == 0xffff;
}

/* ---- TCP options: a signature option, the timestamp -----------------------------------
 * pd_tcp_options() returns PD_OPT_SIG if there is an MD5 (19) or TCP-AO (29) option,
 * PD_OPT_TS | TSval if there is a timestamp, PD_OPT_BAD if they do not parse. The walk
 * keeps its state in ctx->work (a map value, opaque to the verifier: the loop converges). */
#define PD_OPT_TS (1ULL << 32)
#define PD_OPT_SIG (1ULL << 33)
#define PD_OPT_BAD (1ULL << 34)

struct pd_opt_walk {
	__u32 i;
	__u32 n;
	__u64 result;
	__u8 b[64];
};

struct pd_opt_cb_ctx {
	struct pd_ctx *ctx;
};

static long pd_opt_cb(__u32 k, struct pd_opt_cb_ctx *c)
{
	struct pd_opt_walk *w = (struct pd_opt_walk *)c->ctx->work;
	__u32 i = w->i, n = w->n;
	if (i >= n || n > 40)
		return 1;
	__u8 kind = w->b[i & 63];
	if (kind == 0)
		return 1; /* end of options */
	if (kind == 1) {
		w->i = i + 1; /* no-op */
		return 0;
	}
	if (i + 1 >= n) {
		w->result |= PD_OPT_BAD;
		return 1;
	}
	__u8 len = w->b[(i + 1) & 63];
	if (len < 2 || i + len > n) {
		w->result |= PD_OPT_BAD;
		return 1;
	}
	if (kind == 19 || kind == 29)
		w->result |= PD_OPT_SIG;
	if (kind == 8 && len == 10)
		w->result |= PD_OPT_TS | ((__u32)w->b[(i + 2) & 63] << 24) | ((__u32)w->b[(i + 3) & 63] << 16) |
			     ((__u32)w->b[(i + 4) & 63] << 8) | w->b[(i + 5) & 63];
	w->i = i + len;
	return 0;
}

PD_INLINE __u64 pd_tcp_options(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 l4_off, __u32 payload_off)
{
	_Static_assert(sizeof(struct pd_opt_walk) <= sizeof(ctx->work), "work too small");
	struct pd_opt_walk *w = (struct pd_opt_walk *)ctx->work;
	__u32 n = payload_off - l4_off;
	if (n <= 20)
		return 0;
	n -= 20;
	if (n > 40)
		return PD_OPT_BAD;
	w->i = 0;
	w->n = n;
	w->result = 0;
	if (bpf_skb_load_bytes(skb, l4_off + 20, w->b, n) < 0)
		return PD_OPT_BAD;
	struct pd_opt_cb_ctx c = { .ctx = ctx };
	bpf_loop(40, pd_opt_cb, &c, 0);
	return w->result;
}

/* ---- digest of a judged head ------------------------------------------------------------
 * Keyed per connection with a random key the client never sees, so a different head with
 * the same digest cannot be prepared in advance. Over buf[0..len), 8 bytes at a time. */
struct pd_digest_walk {
	__u8 *buf;
	__u32 len;
	__u64 h;
};

static long pd_digest_cb(__u32 i, struct pd_digest_walk *d)
{
	__u32 base = i * 64; /* 8 words a step: a step of bpf_loop costs more than a word */
	if (base >= d->len)
		return 1;
	__u64 h = d->h;
	for (int j = 0; j < 8; j++) {
		__u32 pos = base + j * 8;
		if (pos >= d->len)
			break;
		__u64 w = *(__u64 *)(d->buf + PD_HEAD_IDX(pos));
		__u32 rem = d->len - pos;
		if (rem < 8)
			w &= (1ULL << (rem * 8)) - 1;
		h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	d->h = h;
	return 0;
}

PD_INLINE __u64 pd_digest(__u8 *buf, __u32 len, __u64 key)
{
	struct pd_digest_walk d = { .buf = buf, .len = len, .h = key ^ len };
	if (len > PD_HEAD_MAX)
		return 0;
	bpf_loop((len + 63) / 64, pd_digest_cb, &d, 0);
	__u64 h = d.h * 0xff51afd7ed558ccdULL;
	return h ^ (h >> 33);
}

#endif /* PD_SEGMENT_H */

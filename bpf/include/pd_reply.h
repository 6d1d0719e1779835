/* pd_reply.h: turning the packet being judged into a reply — an HTTP response or RST to
 * the client (sent with bpf_clone_redirect out of the interface it came in on), and an
 * RST to the server (the rewritten packet itself, forwarded as usual) — and cutting a
 * segment short at a judged request boundary.
 *
 * Checksums: an skb from a local stack or veth is usually CHECKSUM_PARTIAL (the TCP
 * checksum field holds only the pseudo-header sum; the payload is summed on transmit),
 * one from a NIC is not. We never need to know which: the field is set to the folded
 * pseudo-header sum P, and the rest is applied through bpf_l4_csum_replace() as a
 * non-pseudo diff, which the kernel applies only to non-PARTIAL skbs. For those the new
 * field is ~(diff + ~P), so diff = 2P + sum(header, payload) gives ~(P + H + D). Length
 * changes go through bpf_skb_change_tail(), whose trim turns CHECKSUM_COMPLETE into NONE. */
#ifndef PD_REPLY_H
#define PD_REPLY_H

#include "pd_common.h"
#include "pd_parse.h"

PD_INLINE __u32 pd_csum_add(__u32 a, __u32 b)
{
	__u32 r = a + b;
	return r + (r < a);
}

PD_INLINE __u16 pd_csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* sum of the TCP pseudo header (addresses from ctx->key, swapped when to_client) */
PD_INLINE __u32 pd_pseudo_sum(struct pd_ctx *ctx, int to_client, __u32 tcp_len)
{
	__u32 s = 0;
	int words = ctx->family == 4 ? 1 : 4;
	for (int w = 0; w < 4; w++) {
		if (w >= words)
			break;
		__u32 a = ctx->key.saddr[w], b = ctx->key.daddr[w];
		s = pd_csum_add(s, (a & 0xffff) + (a >> 16));
		s = pd_csum_add(s, (b & 0xffff) + (b >> 16));
	}
	(void)to_client; /* the sum is symmetric in the two addresses */
	s = pd_csum_add(s, bpf_htons(IPPROTO_TCP));
	s = pd_csum_add(s, bpf_htons(tcp_len));
	return s;
}

struct pd_sum_walk {
	struct __sk_buff *skb;
	__u32 off;
	__u32 len;
	__u32 sum;
	int err;
};

static long pd_sum_cb(__u32 i, struct pd_sum_walk *w)
{
	__u8 buf[128] = {}; /* small: this frame adds to the caller's stack */
	int n = pd_load_chunk(w->skb, w->off, w->len, i, buf, sizeof(buf));
	if (n <= 0) {
		w->err = n < 0;
		return 1;
	}
	/* zero padding to a multiple of 4 does not change a ones' complement sum */
	__s64 s = bpf_csum_diff(0, 0, (__be32 *)buf, sizeof(buf), 0);
	if (s < 0) {
		w->err = 1;
		return 1;
	}
	w->sum = pd_csum_add(w->sum, (__u32)s);
	return 0;
}

/* ones' complement sum of len bytes at off (off - l4_off must be even) */
PD_INLINE int pd_sum_bytes(struct __sk_buff *skb, __u32 off, __u32 len, __u32 *sum)
{
	struct pd_sum_walk w = { .skb = skb, .off = off, .len = len };
	if (len == 0) {
		*sum = 0;
		return 0;
	}
	bpf_loop((len + 127) / 128, pd_sum_cb, &w, 0);
	*sum = w.sum;
	return w.err ? -1 : 0;
}

/* Set the TCP checksum of the packet as it now is (tcp_len bytes from l4_off). */
PD_INLINE int pd_fix_tcp_csum(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 tcp_len)
{
	__u32 csum_off = ctx->l4_off + 16;
	__u16 zero = 0;
	if (bpf_skb_store_bytes(skb, csum_off, &zero, 2, 0) < 0)
		return -1;
	__u32 hd;
	if (pd_sum_bytes(skb, ctx->l4_off, tcp_len, &hd) < 0)
		return -1;
	__u32 p = pd_csum_fold(pd_pseudo_sum(ctx, 0, tcp_len));
	__u16 field = (__u16)p;
	if (bpf_skb_store_bytes(skb, csum_off, &field, 2, 0) < 0)
		return -1;
	__u32 diff = pd_csum_add(pd_csum_add(p, p), hd);
	return bpf_l4_csum_replace(skb, csum_off, 0, diff, 0);
}

PD_INLINE int pd_fix_ip(struct __sk_buff *skb, struct pd_ctx *ctx, int to_client, __u32 l3_len)
{
	if (ctx->family == 4) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, ctx->l3_off, &ip, sizeof(ip)) < 0)
			return -1;
		__u32 ihl = (__u32)ip.ihl * 4;
		ip.tot_len = bpf_htons(l3_len);
		/* both directions are written in full: the packet may already be a reply */
		ip.saddr = to_client ? ctx->key.daddr[0] : ctx->key.saddr[0];
		ip.daddr = to_client ? ctx->key.saddr[0] : ctx->key.daddr[0];
		if (to_client) {
			ip.ttl = 64;
			ip.id = 0;
			ip.frag_off = bpf_htons(0x4000); /* DF */
			ip.tos = 0;
		}
		ip.check = 0;
		if (bpf_skb_store_bytes(skb, ctx->l3_off, &ip, sizeof(ip), 0) < 0)
			return -1;
		/* the header checksum covers the options too */
		__u8 hdr[60] = {};
		if (ihl < 20 || ihl > 60 || bpf_skb_load_bytes(skb, ctx->l3_off, hdr, 20) < 0)
			return -1;
		if (ihl > 20) {
			__u32 opt = ihl - 20; /* 4..40: options are covered by the checksum too */
			if (opt > 40 || bpf_skb_load_bytes(skb, ctx->l3_off + 20, hdr + 20, opt) < 0)
				return -1;
		}
		__s64 s = bpf_csum_diff(0, 0, (__be32 *)hdr, sizeof(hdr), 0);
		if (s < 0)
			return -1;
		__u16 check = ~pd_csum_fold((__u32)s);
		return bpf_skb_store_bytes(skb, ctx->l3_off + 10, &check, 2, 0);
	}
	struct ipv6hdr ip6;
	if (bpf_skb_load_bytes(skb, ctx->l3_off, &ip6, sizeof(ip6)) < 0)
		return -1;
	/* extension headers are dropped from replies: next header becomes TCP */
	ip6.payload_len = bpf_htons(l3_len - sizeof(ip6));
	__builtin_memcpy(&ip6.saddr, to_client ? ctx->key.daddr : ctx->key.saddr, 16);
	__builtin_memcpy(&ip6.daddr, to_client ? ctx->key.saddr : ctx->key.daddr, 16);
	if (to_client) {
		ip6.hop_limit = 64;
		ip6.flow_lbl[0] = ip6.flow_lbl[1] = ip6.flow_lbl[2] = 0;
		ip6.priority = 0;
	}
	return bpf_skb_store_bytes(skb, ctx->l3_off, &ip6, sizeof(ip6), 0);
}

enum pd_reply_kind {
	PD_REPLY_RST_SERVER = 0, /* RST in the original direction, forwarded to the server */
	PD_REPLY_RST_CLIENT = 1,
	PD_REPLY_HTTP = 2,       /* an HTTP response + FIN to the client */
};

/* Rewrites the packet into a reply. body/body_len: the HTTP response bytes (HTTP only).
 * swap_macs: exchange the Ethernet addresses (a reply to the client, or back again when the
 * packet was a client reply before). */
PD_INLINE int pd_build(struct __sk_buff *skb, struct pd_ctx *ctx, int kind,
		       const char *body, __u32 body_len, int swap_macs)
{
	int to_client = kind != PD_REPLY_RST_SERVER;
	/* IPv6 replies carry no extension headers: TCP goes right after the fixed header. They
	 * are removed as the stack would (bpf_skb_adjust_room), not trimmed over: the skb may
	 * know where its transport header is (the sender's stack or GRO set it), and the kernel
	 * refuses to trim a packet shorter than that. */
	if (ctx->family == 6) {
		__u32 fixed_end = ctx->l3_off + sizeof(struct ipv6hdr);
		if (ctx->l4_off > fixed_end) {
			__s32 ext = (__s32)(ctx->l4_off - fixed_end);
			if (bpf_skb_adjust_room(skb, -ext, BPF_ADJ_ROOM_NET, 0) < 0)
				return -1;
		}
		ctx->l4_off = fixed_end;
	}
	__u32 tcp_len = sizeof(struct tcphdr) + (kind == PD_REPLY_HTTP ? body_len : 0);
	__u32 total = ctx->l4_off + tcp_len;

	/* trim first (COMPLETE -> NONE, GSO reset), then grow to the reply's length */
	if (bpf_skb_change_tail(skb, ctx->l4_off + sizeof(struct tcphdr), 0) < 0)
		return -1;
	if (total != ctx->l4_off + sizeof(struct tcphdr) && bpf_skb_change_tail(skb, total, 0) < 0)
		return -1;

	if (swap_macs) {
		__u8 macs[12];
		if (bpf_skb_load_bytes(skb, 0, macs, 12) < 0)
			return -1;
		__u8 swapped[12];
		__builtin_memcpy(swapped, macs + 6, 6);
		__builtin_memcpy(swapped + 6, macs, 6);
		if (bpf_skb_store_bytes(skb, 0, swapped, 12, 0) < 0)
			return -1;
	}
	if (ctx->family == 6) {
		__u8 nh = IPPROTO_TCP;
		if (bpf_skb_store_bytes(skb, ctx->l3_off + 6, &nh, 1, 0) < 0)
			return -1;
	}
	if (pd_fix_ip(skb, ctx, to_client, total - ctx->l3_off) < 0)
		return -1;

	struct tcphdr th = {};
	__u32 acked = ctx->seq + ctx->payload_len;
	if (to_client) {
		th.source = ctx->key.dport;
		th.dest = ctx->key.sport;
		th.seq = bpf_htonl(ctx->ack);
		th.ack_seq = bpf_htonl(acked);
		th.window = bpf_htons(kind == PD_REPLY_HTTP ? 1024 : 0);
	} else {
		th.source = ctx->key.sport;
		th.dest = ctx->key.dport;
		th.seq = bpf_htonl(ctx->seq);
		th.ack_seq = bpf_htonl(ctx->ack);
	}
	th.doff = 5;
	th.ack = 1;
	if (kind == PD_REPLY_HTTP) {
		th.psh = 1;
		th.fin = 1;
	} else {
		th.rst = 1;
	}
	if (bpf_skb_store_bytes(skb, ctx->l4_off, &th, sizeof(th), 0) < 0)
		return -1;
	if (kind == PD_REPLY_HTTP && body_len > 0) {
		if (body_len > 512 || bpf_skb_store_bytes(skb, ctx->l4_off + sizeof(th), body,
							   body_len & 511, 0) < 0)
			return -1;
	}
	return pd_fix_tcp_csum(skb, ctx, tcp_len);
}

/* Cut the segment so it ends at sequence number `upto` (a judged request boundary):
 * what follows is not passed and TCP will resend it, to be judged then. */
PD_INLINE int pd_truncate(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 upto)
{
	__u32 keep = upto - ctx->seq;
	if (keep >= ctx->payload_len)
		return 0;
	__u32 tcp_hdr = ctx->payload_off - ctx->l4_off;
	__u32 total = ctx->payload_off + keep;
	if (bpf_skb_change_tail(skb, total, 0) < 0)
		return -1;
	ctx->payload_len = keep;
	if (pd_fix_ip(skb, ctx, 0, total - ctx->l3_off) < 0)
		return -1;
	pd_count(PD_C_TRUNCATED);
	return pd_fix_tcp_csum(skb, ctx, tcp_hdr + keep);
}

#endif /* PD_REPLY_H */

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

/* ---- TCP options: a signature option, the timestamp, the window scale ----------------
 * pd_tcp_options() returns PD_OPT_SIG if there is an MD5 (19) or TCP-AO (29) option,
 * PD_OPT_TS | TSval if there is a timestamp, PD_OPT_WS | shift << 40 if there is a window
 * scale, PD_OPT_BAD if they do not parse. The walk keeps its state in a map value (opaque
 * to the verifier, so the loop converges): the context's work area, or egress's egress_work. */
#define PD_OPT_TS (1ULL << 32)
#define PD_OPT_SIG (1ULL << 33)
#define PD_OPT_BAD (1ULL << 34)
#define PD_OPT_WS (1ULL << 35)
#define PD_OPT_WS_SHIFT(o) ((__u8)((o) >> 40))

struct pd_opt_cb_ctx { /* bpf_loop's context must be on the stack */
	struct pd_opt_walk *w;
};

static long pd_opt_cb(__u32 k, struct pd_opt_cb_ctx *c)
{
	struct pd_opt_walk *w = c->w;
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
	if (kind == 3 && len == 3)
		w->result |= PD_OPT_WS | ((__u64)w->b[(i + 2) & 63] << 40);
	w->i = i + len;
	return 0;
}

PD_INLINE __u64 pd_tcp_options_in(struct __sk_buff *skb, struct pd_opt_walk *w, __u32 l4_off,
				  __u32 payload_off)
{
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
	struct pd_opt_cb_ctx c = { .w = w };
	bpf_loop(40, pd_opt_cb, &c, 0);
	return w->result;
}

PD_INLINE __u64 pd_tcp_options(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 l4_off, __u32 payload_off)
{
	return pd_tcp_options_in(skb, &ctx->work.opt, l4_off, payload_off);
}

/* Copy len payload bytes at skb offset off into buf[pos..]. buf is PD_HEAD_MAX + SLACK
 * long; pos < PD_HEAD_MAX and each piece <= PD_COPY_CHUNK keeps every write in bounds. */
PD_INLINE int pd_copy_in(struct __sk_buff *skb, __u32 off, __u8 *buf, __u32 pos, __u32 len)
{
	for (int i = 0; i < PD_HEAD_MAX / PD_COPY_CHUNK; i++) {
		if (len == 0)
			return 0;
		__u32 n = len > PD_COPY_CHUNK ? PD_COPY_CHUNK : len;
		if (n < 1 || pos >= PD_HEAD_MAX)
			return -1;
		if (bpf_skb_load_bytes(skb, off, buf + PD_HEAD_IDX(pos), n) < 0)
			return -1;
		off += n;
		pos += n;
		len -= n;
	}
	return len == 0 ? 0 : -1;
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


/* ---- judged heads, and the server's side -----------------------------------------------
 * The last allowed head is in judged_*. When the next one is allowed, it moves to older[]
 * if the server has not acknowledged it yet (pd_egress records srv_ack); a head in older[]
 * stays until a newer one takes its slot. Any copy of a kept head is checked, acknowledged
 * or not (different bytes are evasion either way). What the server has acknowledged only
 * decides what cannot be checked: a piece of an earlier head, or bytes where a head that
 * left older[] unacknowledged was, get the fail mode unless the server already has them. */

/* Has the server acknowledged every byte before end? */
PD_INLINE int pd_srv_has(struct pd_flow *f, __u32 end)
{
	return f->srv == PD_SRV_SEEN && !pd_seq_before(f->srv_ack, end);
}

/* The first byte at or after lo that the server does not have yet. */
PD_INLINE __u32 pd_check_from(struct pd_flow *f, __u32 lo)
{
	if (f->srv == PD_SRV_SEEN && pd_seq_before(lo, f->srv_ack))
		return f->srv_ack;
	return lo;
}

/* A new connection (SYN): nothing judged, nothing known of the server. */
PD_INLINE void pd_flow_clear_judged(struct pd_flow *f)
{
	f->judged_len = 0;
	f->held = 0;
	f->srv = PD_SRV_NONE;
	f->srv_wscale = 0;
	f->older_next = 0;
	f->unchecked = 0;
	f->check_lo = 0;
	f->unchecked_end = 0;
	for (int i = 0; i < PD_OLDER_HEADS; i++)
		f->older[i].len = 0;
}

/* A new connection on f's 4-tuple whose SYN has sequence number isn: nothing judged yet,
 * nothing known of the server. proto, gen and listener are the caller's. */
PD_INLINE void pd_flow_start(struct pd_flow *f, __u32 isn, __u8 has_ts, __u32 tsval)
{
	f->next_seq = isn + 1;
	f->state = PD_FS_HEAD;
	f->verdict = PD_ACT_NONE;
	f->accumulating = 0;
	f->chunk_state = 0;
	f->chunk_left = 0;
	f->chunk_hi = 0;
	f->rule = PD_RULE_NONE;
	f->requests = 0;
	pd_flow_clear_judged(f);
	f->has_ts = has_ts;
	f->ts_recent = tsval;
	f->syn_pending = 0;
	f->upgrade = PD_UP_NONE;
	f->check_hi = isn + 1;
	f->digest_key = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
}

/* ---- partial heads per client ------------------------------------------------------------ */
PD_INLINE void pd_src_of(const struct pd_flow_key *k, struct pd_src_key *s)
{
	s->addr[0] = k->saddr[0];
	s->addr[1] = k->family == 6 ? k->saddr[1] : 0; /* an IPv6 client: its /64 */
	s->family = k->family;
}

/* One more partial head held for k's client: 0 if it holds `bound` already (0: no bound). */
PD_INLINE int pd_partial_hold(const struct pd_flow_key *k, __u32 bound)
{
	struct pd_src_key s;
	pd_src_of(k, &s);
	__u64 *n = bpf_map_lookup_elem(&pd_accum_src, &s);
	if (!n) {
		__u64 one = 1;
		bpf_map_update_elem(&pd_accum_src, &s, &one, BPF_NOEXIST);
		return 1;
	}
	/* a count below zero (two releases racing): the daemon's recount sets it right */
	if (bound && *n >= bound && *n < (1ULL << 62))
		return 0;
	__sync_fetch_and_add(n, 1);
	return 1;
}

PD_INLINE void pd_partial_release(const struct pd_flow_key *k)
{
	struct pd_src_key s;
	pd_src_of(k, &s);
	__u64 *n = bpf_map_lookup_elem(&pd_accum_src, &s);
	if (n && *n)
		__sync_fetch_and_sub(n, 1);
}

/* The flow's partial head is done with (judged, refused, or gone from pd_accum). */
PD_INLINE void pd_accum_end(struct pd_flow *f, const struct pd_flow_key *k)
{
	if (f->accumulating)
		pd_partial_release(k);
	f->accumulating = 0;
}

/* [seq, end) was judged or read, but no record of it can be kept: copies of it the server
 * does not have yet cannot be checked. Only with the server's side: without it nothing
 * tells which copies could still matter. */
PD_INLINE void pd_mark_unchecked(struct pd_flow *f, __u32 end)
{
	if (f->srv != PD_SRV_SEEN || pd_srv_has(f, end))
		return;
	if (!f->unchecked || pd_seq_before(f->unchecked_end, end))
		f->unchecked_end = end;
	f->unchecked = 1;
}

/* Keep [seq, seq + len) with its digest in older[], in place of the oldest record. */
PD_INLINE void pd_keep_older(struct pd_flow *f, __u32 seq, __u32 len, __u64 digest)
{
	__u32 i = f->older_next;
	if (i >= PD_OLDER_HEADS)
		i = 0;
	struct pd_judged *o = &f->older[i];
	if (o->len)
		pd_mark_unchecked(f, o->seq + o->len); /* it drops out */
	o->seq = seq;
	o->len = (__u16)len;
	o->digest = digest;
	f->older_next = i + 1 >= PD_OLDER_HEADS ? 0 : i + 1;
}

/* check_lo / check_hi: where the bytes start and end that a copy is checked against. */
PD_INLINE void pd_check_bounds(struct pd_flow *f, __u32 end)
{
	__u32 lo = f->judged_len ? f->judged_seq : end;
	for (int i = 0; i < PD_OLDER_HEADS; i++) {
		struct pd_judged *o = &f->older[i];
		if (o->len && pd_seq_before(o->seq, lo))
			lo = o->seq;
	}
	if (f->unchecked && pd_srv_has(f, f->unchecked_end))
		f->unchecked = 0;
	if (f->unchecked && pd_seq_before(f->srv_ack, lo))
		lo = f->srv_ack;
	f->check_lo = lo;
	if (pd_seq_before(f->check_hi, end))
		f->check_hi = end;
}

/* A head was allowed: it becomes the last judged head, the one before moves to older[]. */
PD_INLINE void pd_remember_head(struct pd_flow *f, __u32 seq, __u32 len, __u8 held, __u64 digest)
{
	__u32 pl = f->judged_len, ps = f->judged_seq;
	if (pl && !pd_srv_has(f, ps + pl))
		pd_keep_older(f, ps, pl, f->digest);
	f->judged_seq = seq;
	f->judged_len = (__u16)len;
	f->held = held;
	f->digest = digest;
	pd_check_bounds(f, seq + len);
}

/* Chunked-body framing read in buf[0..len) = the segment's bytes [seq, seq + len): kept like
 * an earlier head, so a copy the server takes instead cannot move the request boundary. */
PD_INLINE void pd_remember_framing(struct pd_flow *f, __u32 seq, __u32 len, __u64 digest)
{
	pd_keep_older(f, seq, len, digest);
	pd_check_bounds(f, seq + len);
}

/* Does [seq, end) hold bytes a copy of which must be checked? (the fast path's test) */
PD_INLINE int pd_overlaps_judged(struct pd_flow *f, __u32 seq, __u32 end)
{
	if (!f->judged_len)
		return 0;
	return pd_seq_before(seq, f->check_hi) && pd_seq_before(f->check_lo, end);
}

#endif /* PD_SEGMENT_H */

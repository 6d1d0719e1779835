/* entry.bpf.c: the program attached at TC ingress. Parses L2-L4, passes everything that
 * is not TCP to a listener at once, decides established flows from the flow table alone
 * (the fast path), accumulates request heads across segments, and hands a complete head
 * to the chain. Also re-entered by tail call for the next pipelined head of a segment. */
#include "pd_common.h"
#include "pd_parse.h"
#include "pd_reply.h"
#include "pd_segment.h"

/* Written by the controller (mmap of .bss): the active generation and each generation's
 * configuration. Read once per packet; the generation is then carried in the context. */
volatile __u32 pd_active_gen;
volatile struct pd_config pd_cfg[PD_GENERATIONS];
/* Written once at load, read by a restarting daemon deciding whether it may adopt the
 * pinned chain: the same build (programs and maps as they are) or the same ABI (maps). */
volatile __u64 pd_build_id;
volatile __u32 pd_abi_version;
/* digest of each generation's compiled tables: an unchanged policy changes nothing */
volatile __u64 pd_tables_digest[PD_GENERATIONS];
/* the generation pd_preflight probes (a prepared, not yet active one) */
volatile __u32 pd_preflight_gen;

/* ---- end-of-head search ------------------------------------------------------------
 * A head ends at an empty line: LF followed by LF, or LF CR LF. Bare-LF endings count, so
 * we never keep accumulating a head that a lenient server has already acted on. */
struct pd_scan {
	__u8 *buf; /* map value: the context's head or an accumulation entry */
	struct pd_ctx *ctx;
};

static long pd_scan_cb(__u32 i, struct pd_scan *sc)
{
	struct pd_scan_state *s = &sc->ctx->work.scan;
	__u32 pos = s->from;
	if (pos >= s->to)
		return 1;
	if (s->lead) {
		__u8 c = sc->buf[PD_HEAD_IDX(pos)];
		s->from = pos + 1;
		if (c == '\r' || c == '\n')
			return 0;
		s->lead = 0;
		return 0;
	}
	/* no LF in the next 8 bytes: skip them at once */
	if (pos + 8 <= s->to && !pd_has_byte(*(__u64 *)(sc->buf + PD_HEAD_IDX(pos)), '\n')) {
		s->from = pos + 8;
		return 0;
	}
	s->from = pos + 1;
	if (sc->buf[PD_HEAD_IDX(pos)] != '\n')
		return 0;
	if (s->first) {
		s->end = pos + 1;
		return 1;
	}
	if (pos + 1 < s->to && sc->buf[PD_HEAD_IDX(pos + 1)] == '\n') {
		s->end = pos + 2;
		return 1;
	}
	if (pos + 2 < s->to && sc->buf[PD_HEAD_IDX(pos + 1)] == '\r' &&
	    sc->buf[PD_HEAD_IDX(pos + 2)] == '\n') {
		s->end = pos + 3;
		return 1;
	}
	return 0;
}

/* Whether the request line ending with the LF at buf[lf] ends in " HTTP/d.d" (an optional
 * CR before the LF). */
PD_INLINE int pd_http_versioned(__u8 *buf, __u32 lf)
{
	__u32 e = lf;
	if (e > 0 && buf[PD_HEAD_IDX(e - 1)] == '\r')
		e--;
	if (e < 9)
		return 0;
	__u32 b = e - 9;
	return buf[PD_HEAD_IDX(b)] == ' ' && buf[PD_HEAD_IDX(b + 1)] == 'H' && buf[PD_HEAD_IDX(b + 2)] == 'T' &&
	       buf[PD_HEAD_IDX(b + 3)] == 'T' && buf[PD_HEAD_IDX(b + 4)] == 'P' && buf[PD_HEAD_IDX(b + 5)] == '/' &&
	       buf[PD_HEAD_IDX(b + 6)] >= '0' && buf[PD_HEAD_IDX(b + 6)] <= '9' && buf[PD_HEAD_IDX(b + 7)] == '.' &&
	       buf[PD_HEAD_IDX(b + 8)] >= '0' && buf[PD_HEAD_IDX(b + 8)] <= '9';
}

PD_INLINE __u32 pd_find_head_end(struct pd_ctx *ctx, __u8 *buf, __u32 from, __u32 to)
{
	struct pd_scan_state *s = &ctx->work.scan;
	struct pd_scan sc = { .buf = buf, .ctx = ctx };
	s->from = from;
	s->to = to;
	s->end = 0;
	/* a head whose first bytes are empty lines; a scan resumed in an accumulated head does
	 * not skip (at worst a head of nothing but empty lines gets the fail mode) */
	s->lead = from == 0;
	s->first = 0;
	if (to > from)
		bpf_loop(to - from, pd_scan_cb, &sc, 0);
	if (s->end)
		return s->end;
	/* No empty line yet. A server acts on a request line without a version at once
	 * (HTTP/0.9: nginx serves "GET /path" with no headers), so an incomplete head can pass
	 * only while its request line is incomplete or carries HTTP/x.y. Otherwise the request
	 * line is the head, judged now (the HTTP stage gives it bad_request_line). The scan
	 * stops at the request line's end: short, after the first segments. */
	s->from = 0;
	s->end = 0;
	s->lead = 1;
	s->first = 1;
	if (to > 0)
		bpf_loop(to, pd_scan_cb, &sc, 0);
	__u32 q = s->end;
	if (q && !pd_http_versioned(buf, q - 1))
		return q;
	return 0;
}

/* ---- end of a ClientHello ------------------------------------------------------------
 * The head of a TLS connection is the ClientHello handshake message, which may span several
 * TLS records. Returns the offset after the record holding its last byte, 0 if more bytes
 * are needed, -1 if this is not a well-formed start of a ClientHello. */
#define PD_TLS_RECORDS_MAX 16

PD_INLINE int pd_tls_head_end(__u8 *buf, __u32 len)
{
	__u32 off = 0, need = 0, have = 0;
	for (int r = 0; r < PD_TLS_RECORDS_MAX; r++) {
		if (off + 5 > len)
			return 0;
		if (buf[PD_HEAD_IDX(off)] != 0x16 || buf[PD_HEAD_IDX(off + 1)] != 0x03)
			return -PD_R_NOT_TLS; /* not a handshake record */
		__u32 rlen = ((__u32)buf[PD_HEAD_IDX(off + 3)] << 8) | buf[PD_HEAD_IDX(off + 4)];
		if (rlen == 0 || rlen > 16384 + 256)
			return -PD_R_TLS_LENGTH;
		if (r == 0) {
			if (off + 9 > len)
				return 0;
			if (buf[PD_HEAD_IDX(5)] != 0x01)
				return -PD_R_TLS_NOT_HELLO;
			if (rlen < 4)
				return -PD_R_TLS_LENGTH;
			need = 4 + (((__u32)buf[PD_HEAD_IDX(6)] << 16) | ((__u32)buf[PD_HEAD_IDX(7)] << 8) |
				    buf[PD_HEAD_IDX(8)]);
			if (need > PD_HEAD_MAX)
				return -PD_R_TLS_LENGTH;
		}
		have += rlen;
		off += 5 + rlen;
		if (have >= need)
			return off > len ? 0 : (int)off;
		if (off >= len)
			return 0;
	}
	return -PD_R_TLS_LENGTH; /* more records than any client sends */
}

/* The end of the head in buf[0..len): HTTP's empty line or the end of the ClientHello. */
PD_INLINE int pd_head_end(struct pd_ctx *ctx, __u8 *buf, __u32 from, __u32 len)
{
	if (ctx->proto == PD_PROTO_TLS)
		return pd_tls_head_end(buf, len);
	return (int)pd_find_head_end(ctx, buf, from, len);
}

/* A complete head goes to the parser (HTTP) or straight into the chain (TLS). */
PD_INLINE int pd_judge_head(struct __sk_buff *skb, struct pd_ctx *ctx)
{
	if (ctx->proto == PD_PROTO_TLS)
		return pd_chain_next(skb, ctx);
	return pd_tail(skb, ctx, PD_STAGE_HTTP);
}

/* Compare len payload bytes at skb offset off with buf[pos..]: 0 if equal. The segment's
 * bytes are loaded 64 at a time into ctx->work.cmp (a map value: no stack for them). */
struct pd_cmp {
	struct __sk_buff *skb;
	struct pd_ctx *ctx;
	__u8 *buf;
	__u32 off;
	__u32 pos;
	__u32 len;
	int diff;
};

static long pd_cmp_cb(__u32 i, struct pd_cmp *c)
{
	__u8 *tmp = c->ctx->work.cmp;
	__u32 done = i * 64;
	int n = pd_load_chunk(c->skb, c->off, c->len, i, tmp, 64);
	if (n <= 0) {
		c->diff = n < 0;
		return 1;
	}
	for (__u32 j = 0; j < 64; j++) {
		if (j >= (__u32)n)
			break;
		if (tmp[j] != c->buf[PD_HEAD_IDX(c->pos + done + j)]) {
			c->diff = 1;
			return 1;
		}
	}
	return 0;
}

PD_INLINE int pd_compare(struct __sk_buff *skb, struct pd_ctx *ctx, __u32 off, __u8 *buf, __u32 pos, __u32 len)
{
	struct pd_cmp c = { .skb = skb, .ctx = ctx, .buf = buf, .off = off, .pos = pos, .len = len, .diff = 0 };
	if (len == 0)
		return 0;
	if (len > PD_HEAD_MAX)
		return 1;
	bpf_loop((len + 63) / 64, pd_cmp_cb, &c, 0);
	return c.diff;
}

/* Copy an accumulated head into the context (both are map values). */
PD_INLINE int pd_copy_acc(struct pd_ctx *ctx, struct pd_accum *acc)
{
	__u32 len = acc->len;
	if (len > PD_HEAD_MAX)
		return -1;
	ctx->head.start_seq = acc->start_seq;
	ctx->head.len = len;
	if (len < 1)
		return 0;
	return bpf_probe_read_kernel(ctx->head.buf, len, acc->buf) < 0 ? -1 : 0;
}

/* The segment's addresses, offsets, sequence numbers and flags: what pd_discard_check reads. */
PD_INLINE void pd_ctx_segment(struct pd_ctx *ctx, struct pd_pkt *p)
{
	__builtin_memcpy(&ctx->key, &p->key, sizeof(ctx->key));
	ctx->family = p->family;
	ctx->l4_off = p->l4_off;
	ctx->payload_off = p->payload_off;
	ctx->payload_len = p->payload_len;
	ctx->seq = p->seq;
	ctx->ack = p->ack;
	ctx->tcp_flags = p->tcp_flags;
}

/* The context for this packet: its state zeroed as one block, then what the packet, the
 * listener and the generation's configuration say. pipelined and reenter are the caller's
 * (they carry across a re-entry). */
PD_INLINE void pd_ctx_init(struct pd_ctx *ctx, struct __sk_buff *skb, struct pd_pkt *p,
			   __u32 gen, volatile struct pd_config *cfg, __u8 proto, __u16 listener, int preflight)
{
	__builtin_memset(&ctx->pkt, 0, sizeof(ctx->pkt));
	ctx->magic = PD_CTX_MAGIC;
	ctx->version = PD_CTX_VERSION;
	ctx->gen = gen;
	ctx->stage = PD_STAGE_ENTRY;
	ctx->preflight = preflight;
	pd_ctx_segment(ctx, p);
	ctx->ifindex = skb->ifindex;
	ctx->l3_off = p->l3_off;
	ctx->proto = proto;
	ctx->listener = listener;
	ctx->default_action = cfg->default_action;
	ctx->fail_open = cfg->fail_open;
	ctx->max_head = cfg->max_head_bytes;
	ctx->hash_seed = cfg->hash_seed;
	ctx->max_pipeline = cfg->max_pipeline;
	ctx->missing_sni = cfg->missing_sni;
	__u32 g = gen & 1;
	__u32 *tag = bpf_map_lookup_elem(&pd_gen_tags, &g);
	ctx->gen_tag = tag ? *tag : 0;
	ctx->host_id = PD_RULE_NONE;
	ctx->rule = PD_RULE_NONE;
}

/* This CPU's scratch context set up for this packet, or NULL (the caller drops it). */
PD_INLINE struct pd_ctx *pd_ctx_start(struct __sk_buff *skb, struct pd_pkt *p, __u32 gen,
				      volatile struct pd_config *cfg, __u8 proto, __u16 listener, int preflight)
{
	struct pd_ctx *ctx = pd_scratch_ctx();
	if (ctx)
		pd_ctx_init(ctx, skb, p, gen, cfg, proto, listener, preflight);
	return ctx;
}

/* Is the packet's destination the listener's address (or prefix), if it has one? */
PD_INLINE int pd_listener_addr_ok(struct pd_listener *l, struct pd_pkt *p)
{
	if (!l->addr_family)
		return 1;
	if (l->addr_family != p->family)
		return 0;
	__u32 plen = l->prefix_len;
	for (int w = 0; w < 4; w++) {
		if (plen == 0)
			break;
		__u32 bits = plen >= 32 ? 32 : plen;
		__u32 mask = bpf_htonl(bits == 32 ? 0xffffffffu : ~((1u << (32 - bits)) - 1));
		if ((p->key.daddr[w] & mask) != (l->addr[w] & mask))
			return 0;
		plen -= bits;
	}
	return 1;
}

/* ---- bytes of an allowed head, arriving again ------------------------------------------
 * The server may not have taken the copy that was judged (it can discard a segment for
 * reasons a gateway cannot see), so another copy is only let through if it is the same.
 * pd_overlaps_judged (pd_segment.h) sends such segments here. */

/* Global functions (verified once, on their own, so their loops do not multiply the
 * states of the program around them). ctx holds the segment (pd_ctx_init). */

/* The reason (pd_ignored) the server's TCP would discard this data segment, or -1 if it
 * would take it. f is NULL for a SYN. Leaves the segment's timestamp in ctx->seg_*. */
__noinline int pd_discard_check(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_flow *f, __u32 ttl)
{
	if (!ctx)
		return PD_IG_CHECKSUM;
	ctx->seg_has_ts = 0;
	ctx->seg_tsval = 0;
	if (ttl <= 1)
		return PD_IG_TTL;
	if (!(ctx->tcp_flags & (PD_TCP_ACK | PD_TCP_SYN)))
		return PD_IG_NO_ACK;
	/* a SYN-ACK from the client's side (a SYN alone starts a connection: handled before) */
	if (f && (ctx->tcp_flags & (PD_TCP_SYN | PD_TCP_ACK)) == (PD_TCP_SYN | PD_TCP_ACK))
		return PD_IG_SYN; /* answered with a challenge ACK, its data dropped */
	if (f && f->srv == PD_SRV_SEEN) {
		/* what the server's packets have said (pd_egress) */
		if ((ctx->tcp_flags & PD_TCP_ACK) && pd_seq_before(f->srv_nxt, ctx->ack))
			return PD_IG_ACK_UNSENT;
		if (!pd_seq_before(ctx->seq, f->srv_edge))
			return PD_IG_WINDOW;
	}
	__u64 o = pd_tcp_options(skb, ctx, ctx->l4_off, ctx->payload_off);
	if (o & PD_OPT_BAD)
		return PD_IG_CHECKSUM; /* options the header length does not hold */
	if (o & PD_OPT_SIG)
		return PD_IG_TCP_SIG;
	__u32 tsval = (__u32)o;
	if (f && f->has_ts && (o & PD_OPT_TS) && (__s32)(f->ts_recent - tsval) > 1)
		return PD_IG_PAWS;
	if (!pd_csum_trusted(skb) && !pd_tcp_csum_ok(skb, ctx))
		return PD_IG_CHECKSUM;
	ctx->seg_has_ts = !!(o & PD_OPT_TS);
	ctx->seg_tsval = tsval;
	return -1;
}

/* ---- timestamps of the segments that pass unjudged --------------------------------------
 * The server's ts_recent moves with the segments it takes: pure ACKs and body bytes as well
 * as heads (RFC 7323; Linux's tcp_replace_ts_recent). Were the gateway to follow heads only,
 * a pure ACK with a newer TSval would leave the server dropping (PAWS) a head the gateway
 * judged, and the server would act on another copy. So every segment that passes, and that
 * the server would take (pd_discard_check), moves ts_recent here too, whatever its sequence
 * number: the gateway's value is never behind the server's, its PAWS test never laxer. */
__noinline int pd_follow_ts(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_flow *f, struct pd_pkt *p)
{
	if (!ctx || !f || !p)
		return 0;
	/* only what pd_discard_check reads: the rest of the scratch context is not touched */
	pd_ctx_segment(ctx, p);
	if (pd_discard_check(skb, ctx, f, p->ttl) < 0 && ctx->seg_has_ts &&
	    (__s32)(ctx->seg_tsval - f->ts_recent) > 0)
		f->ts_recent = ctx->seg_tsval;
	return 0;
}

/* Whether a segment that passes may move ts_recent: its TSval, read where stacks put it
 * (NOP, NOP, timestamp as the first option), is newer; any other layout of options is
 * walked by pd_follow_ts. Cheap enough for the fast path: one load. */
PD_INLINE int pd_ts_may_advance(struct __sk_buff *skb, struct pd_flow *f, struct pd_pkt *p)
{
	if (!f->has_ts || (p->tcp_flags & PD_TCP_RST) || p->payload_off < p->l4_off + 32)
		return 0; /* no room for a timestamp option: nothing to follow */
	__u8 o[8];
	if (bpf_skb_load_bytes(skb, p->l4_off + 20, o, sizeof(o)) < 0)
		return 0;
	if (o[0] != 1 || o[1] != 1 || o[2] != 8 || o[3] != 10)
		return 1;
	__u32 tsval = ((__u32)o[4] << 24) | ((__u32)o[5] << 16) | ((__u32)o[6] << 8) | o[7];
	return (__s32)(tsval - f->ts_recent) > 0;
}

PD_INLINE void pd_track_ts(struct __sk_buff *skb, struct pd_flow *f, struct pd_pkt *p)
{
	if (!pd_ts_may_advance(skb, f, p))
		return;
	struct pd_ctx *c = pd_scratch_ctx();
	if (c)
		pd_follow_ts(skb, c, f, p);
}

/* How a copy of judged bytes compares with what was judged. */
#define PD_SAME 0
#define PD_DIFFERS 1
#define PD_NOT_YET 2
#define PD_UNCHECKED 3 /* bytes of a judged head that can no longer be checked: the fail mode */

/* This segment's copy of earlier heads the server does not have yet (older[]): a whole
 * copy is held to its digest; a piece of one cannot be checked (only the last head's bytes
 * are held), nor can bytes where a head older[] no longer holds may be. */
__noinline int pd_older_differs(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_flow *f)
{
	if (!ctx || !f)
		return PD_DIFFERS;
	__u32 seq = ctx->seq, seg_end = seq + ctx->payload_len;
	for (int i = 0; i < PD_OLDER_HEADS; i++) {
		struct pd_judged *o = &f->older[i];
		__u32 ol = o->len, os = o->seq, oe = os + ol;
		if (!ol || ol > PD_HEAD_MAX || !pd_seq_before(os, seg_end) || !pd_seq_before(seq, oe))
			continue;
		if (pd_seq_before(os, seq) || pd_seq_before(seg_end, oe)) {
			/* a piece: no harm if the server has every byte of it already */
			if (pd_srv_has(f, pd_seq_before(seg_end, oe) ? seg_end : oe))
				continue;
			return PD_UNCHECKED;
		}
		if (pd_copy_in(skb, ctx->payload_off + (os - seq), ctx->head.buf, 0, ol) < 0)
			return PD_DIFFERS;
		if (pd_digest(ctx->head.buf, ol, f->digest_key) != o->digest)
			return PD_DIFFERS;
	}
	/* bytes the server does not have yet, where a head older[] no longer holds may be */
	__u32 eff = pd_check_from(f, seq);
	if (f->unchecked && pd_seq_before(eff, seg_end) && pd_seq_before(eff, f->unchecked_end) &&
	    !pd_srv_has(f, f->unchecked_end))
		return PD_UNCHECKED;
	return PD_SAME;
}

/* This segment's copy of f's last judged head: PD_SAME (let it pass), PD_DIFFERS (not the
 * bytes that were judged), PD_NOT_YET (cannot be checked now: dropped, the sender resends).
 * Uses ctx->head.buf as scratch. */
__noinline int pd_judged_differs(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_flow *f)
{
	if (!ctx || !f)
		return PD_DIFFERS;
	__u32 seq = ctx->seq, seg_end = seq + ctx->payload_len;
	__u32 js = f->judged_seq, jl = f->judged_len, je = js + jl;
	if (!jl || !pd_seq_before(seq, je) || !pd_seq_before(js, seg_end))
		return PD_SAME; /* not a copy of it */
	__u32 from = pd_seq_before(seq, js) ? js : seq;
	__u32 to = pd_seq_before(je, seg_end) ? je : seg_end;
	__u32 off = ctx->payload_off + (from - seq);
	if (jl > PD_HEAD_MAX)
		return PD_DIFFERS;
	if (from == js && to == je) {
		/* the whole head: its digest decides */
		if (pd_copy_in(skb, off, ctx->head.buf, 0, jl) < 0)
			return PD_DIFFERS;
		return pd_digest(ctx->head.buf, jl, f->digest_key) != f->digest ? PD_DIFFERS : PD_SAME;
	}
	struct pd_accum *acc = bpf_map_lookup_elem(&pd_accum, &ctx->key);
	if (acc && acc->start_seq == js && f->held == PD_HELD_ALL && acc->len >= jl) {
		/* part of a head whose bytes are held */
		return pd_compare(skb, ctx, off, acc->buf, from - js, to - from) ? PD_DIFFERS : PD_SAME;
	}
	/* Part of a head only the digest remembers: a sender resending it in smaller pieces
	 * (a smaller MSS, or repacketized). Collect the pieces in order from the head's first
	 * byte; the piece that completes the copy is held to the digest. Until then the pieces
	 * pass, as long as what they hold is no head of its own: the judged head's first end is
	 * at jl, so a copy of its first bytes has none, while a shorter head at the same place
	 * (another path, sent after the server dropped the judged copy) is complete for the
	 * server and acted on at once. */
	if (f->accumulating)
		return PD_NOT_YET; /* the entry is busy with the next head */
	if (from == js) {
		__u32 n = to - from;
		if (pd_copy_in(skb, off, ctx->head.buf, 0, n) < 0)
			return PD_DIFFERS;
		if (pd_head_end(ctx, ctx->head.buf, 0, n) != 0)
			return PD_DIFFERS;
		ctx->head.start_seq = js;
		ctx->head.len = n;
		if (bpf_map_update_elem(&pd_accum, &ctx->key, &ctx->head, BPF_ANY) < 0)
			return PD_NOT_YET;
		f->held = PD_HELD_PREFIX;
		return PD_SAME;
	}
	if (!acc || acc->start_seq != js || f->held != PD_HELD_PREFIX)
		return PD_NOT_YET;
	__u32 have = acc->len, have_end = js + have;
	if (have > jl || pd_seq_before(have_end, from))
		return PD_NOT_YET; /* a gap before this piece */
	__u32 held_to = pd_seq_before(to, have_end) ? to : have_end;
	if (pd_compare(skb, ctx, off, acc->buf, from - js, held_to - from))
		return PD_DIFFERS;
	if (!pd_seq_before(held_to, to))
		return PD_SAME; /* nothing new */
	__u32 add = to - held_to;
	if (add > jl - have)
		return PD_DIFFERS;
	if (pd_copy_in(skb, off + (held_to - from), acc->buf, have, add) < 0)
		return PD_DIFFERS;
	acc->len = have + add;
	if (acc->len < jl)
		return pd_head_end(ctx, acc->buf, 0, acc->len) != 0 ? PD_DIFFERS : PD_SAME;
	if (pd_digest(acc->buf, jl, f->digest_key) != f->digest)
		return PD_DIFFERS;
	f->held = PD_HELD_ALL; /* the copy is complete and the same */
	return PD_SAME;
}

/* Decide without a head: fail mode for a reason found before any stage ran. */
PD_INLINE int pd_early_fail(struct __sk_buff *skb, struct pd_ctx *ctx, __u8 reason)
{
	pd_fail(ctx, reason);
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

/* A new connection the flow table has no room for: dropped (pd_fail_inline without a
 * context), and logged here, where the flow is known. */
PD_INLINE int pd_flow_table_full(struct pd_pkt *p, __u16 listener, __u32 gen, const int preflight)
{
	if (!preflight) {
		__u32 g = gen & 1;
		__u32 *tag = bpf_map_lookup_elem(&pd_gen_tags, &g);
		pd_log_flow(&p->key, listener, tag ? *tag : 0, PD_ACT_DROP, PD_R_FLOW_TABLE_FULL, PD_STAGE_ENTRY);
	}
	return pd_fail_inline(0, PD_R_FLOW_TABLE_FULL);
}

/* The flow entry of a completed handshake, from its pd_syn entry (which the caller deletes).
 * zero: per-CPU scratch the size of a pd_flow, for the zeroed entry. */
PD_INLINE struct pd_flow *pd_flow_from_syn(struct pd_flow_key *key, struct pd_syn *e, struct pd_flow *zero)
{
	__builtin_memset(zero, 0, sizeof(*zero));
	if (bpf_map_update_elem(&pd_flows, key, zero, BPF_ANY) < 0)
		return 0;
	struct pd_flow *f = bpf_map_lookup_elem(&pd_flows, key);
	if (!f)
		return 0;
	pd_flow_start(f, e->isn, e->has_ts, e->tsval);
	f->proto = e->proto;
	f->gen = e->gen;
	f->listener = e->listener;
	f->client_if = e->client_if;
	if (e->synack) {
		/* the server's side, from its SYN-ACK (pd_egress) */
		f->srv_wscale = e->srv_wscale;
		f->srv_data = e->srv_isn + 1;
		f->srv_nxt = e->srv_isn + 1;
		f->srv_ack = e->isn + 1;
		f->srv_edge = e->isn + 1 + e->srv_win;
		f->srv = PD_SRV_SEEN;
	}
	return f;
}

/* gen: the generation this packet runs in; preflight: a compile-time constant after
 * inlining (0 for traffic, 1 for probes of a prepared generation). */
/* probes of a prepared generation are not traffic: not counted */
#define PD_COUNT(idx) do { if (!preflight) pd_count(idx); } while (0)

/* What a part of pd_entry_run returns when it has not decided the packet: the next part
 * goes on. No TC action is negative but TC_ACT_UNSPEC (-1). */
#define PD_GO_ON (-128)

/* ---- connection start: insert once, then write in place -------------------------------
 * A SYN without ACK. Decided here, but for data on the SYN of a flow restarted here (TCP
 * Fast Open): p->seq then moves past the SYN, and the data goes on as a head like any other. */
PD_INLINE int pd_entry_syn(struct __sk_buff *skb, struct pd_pkt *p, struct pd_flow *f, struct pd_listener *l,
			   __u32 gen, volatile struct pd_config *cfg, __u8 proto, const int preflight)
{
	if (f && f->srv == PD_SRV_SEEN) {
		/* The server has (or had) a connection on this 4-tuple. If it still has, it
		 * ignores this SYN (a challenge ACK), and so must the gateway: restarting the
		 * flow here would let the old connection's bytes pass as "before the head".
		 * Only the server's SYN-ACK for this SYN makes it a new connection (pd_egress).
		 * Data on it (Fast Open) cannot be told to belong to either: dropped, the
		 * client sends it again after the handshake. */
		f->syn_isn = p->seq;
		f->syn_pending = 1;
		return p->payload_len ? TC_ACT_SHOT : TC_ACT_OK;
	}
	__u8 has_ts = 0;
	__u32 tsval = 0;
	struct pd_ctx *sc = pd_scratch_ctx(); /* its work area walks the options */
	if (!sc)
		return TC_ACT_SHOT;
	if (!f) {
		/* A new connection waits in pd_syn until its handshake completes: a flood of
		 * SYNs (from spoofed sources, that never complete) cannot push established
		 * connections out of pd_flows. Data on the SYN (Fast Open) is cut off: the
		 * server sees a plain SYN, acknowledges none of it, and the client sends it
		 * again after the handshake, where it is judged like any head. */
		__u64 o = pd_tcp_options(skb, sc, p->l4_off, p->payload_off);
		struct pd_syn e = {
			.isn = p->seq,
			.tsval = (__u32)o,
			.listener = l->id,
			.proto = proto,
			.gen = (__u8)gen,
			.has_ts = (o & PD_OPT_TS) && !(o & PD_OPT_BAD),
			.client_if = skb->ifindex,
		};
		bpf_map_update_elem(&pd_syn, &p->key, &e, BPF_ANY);
		PD_COUNT(PD_C_SYN_NEW);
		if (!p->payload_len)
			return TC_ACT_OK;
		pd_ctx_init(sc, skb, p, gen, cfg, proto, l->id, preflight);
		return pd_truncate(skb, sc, p->seq) < 0 ? TC_ACT_SHOT : TC_ACT_OK;
	}
	if (p->payload_len) {
		/* data on the SYN (TCP Fast Open) is a head like any other: only if the
		 * server would take the segment */
		pd_ctx_init(sc, skb, p, gen, cfg, proto, l->id, preflight);
		int ig = pd_discard_check(skb, sc, 0, p->ttl);
		if (ig >= 0) {
			PD_COUNT(PD_C_IGNORED_BASE + (ig & (PD_IG_MAX - 1)));
			return TC_ACT_SHOT;
		}
		has_ts = sc->seg_has_ts;
		tsval = sc->seg_tsval;
	} else {
		__u64 o = pd_tcp_options(skb, sc, p->l4_off, p->payload_off);
		has_ts = (o & PD_OPT_TS) && !(o & PD_OPT_BAD);
		tsval = (__u32)o;
	}
	/* a flow without the server's side (it never saw a SYN-ACK leave): restarted */
	pd_flow_start(f, p->seq, has_ts, tsval);
	f->client_if = skb->ifindex;
	f->proto = proto;
	f->gen = gen;
	f->listener = l->id;
	if (p->payload_len == 0)
		return TC_ACT_OK;
	p->seq += 1; /* data on the SYN (TCP Fast Open) starts after the SYN's sequence */
	return PD_GO_ON;
}

/* ---- a segment of no flow entry -------------------------------------------------------
 * The ACK that completes a handshake waiting in pd_syn makes the flow entry (*fp, and on);
 * anything else is decided here. */
PD_INLINE int pd_entry_no_flow(struct __sk_buff *skb, struct pd_pkt *p, struct pd_listener *l, __u32 gen,
			       volatile struct pd_config *cfg, __u8 proto, const int preflight, struct pd_flow **fp)
{
	struct pd_syn *e = (p->tcp_flags & PD_TCP_RST) ? 0 : bpf_map_lookup_elem(&pd_syn, &p->key);
	if (e && !(p->tcp_flags & PD_TCP_ACK)) {
		/* data without ACK in a handshake: the server discards it */
		if (!p->payload_len)
			return TC_ACT_OK;
		PD_COUNT(PD_C_IGNORED_BASE + PD_IG_NO_ACK);
		return TC_ACT_SHOT;
	}
	if (e) {
		/* The handshake's ACK (or data after it) completes it, unless the server answered
		 * the SYN otherwise (a challenge ACK on a 4-tuple it has a connection on: its old
		 * stream must not pass as new). When the server's SYN-ACK was seen leave, the ACK
		 * must acknowledge it (its sequence number + 1): only a client that received it
		 * knows that number, so a spoofed source never gets a flow entry, whether or not
		 * the server answers its SYN. A segment after the first (the ACK lost on the way)
		 * starts the flow too: it is then out of order, dropped, and TCP sends the bytes
		 * before it (HTTP and TLS servers send nothing before the client's first bytes, so
		 * its acknowledgment is still the SYN-ACK's). */
		__u32 ahead = p->seq - e->isn;
		int acked = !e->synack || p->ack == e->srv_isn + 1;
		if (!e->refused && acked && ahead >= 1 && ahead < (1u << 30)) {
			struct pd_ctx *hc = pd_scratch_ctx();
			if (!hc)
				return TC_ACT_SHOT;
			_Static_assert(sizeof(struct pd_flow) <= sizeof(hc->head.buf), "head too small");
			struct pd_flow *f = pd_flow_from_syn(&p->key, e, (struct pd_flow *)hc->head.buf);
			if (!f)
				return pd_flow_table_full(p, l->id, gen, preflight);
			bpf_map_delete_elem(&pd_syn, &p->key);
			PD_COUNT(PD_C_FLOWS_NEW);
			*fp = f;
			return PD_GO_ON;
		}
	}
	/* A segment of a connection whose start we never saw: without data it cannot
	 * carry a request; with data we do not know where requests begin. */
	if (p->payload_len == 0 || (p->tcp_flags & PD_TCP_RST))
		return TC_ACT_OK;
	struct pd_ctx *c0 = pd_ctx_start(skb, p, gen, cfg, proto, l->id, preflight);
	if (!c0)
		return TC_ACT_SHOT;
	return pd_early_fail(skb, c0, PD_R_NO_FLOW);
}

/* ---- fast path: the flow entry alone decides -------------------------------------------
 * again: the segment holds bytes of judged heads (pd_overlaps_judged), which only the slow
 * path can hold to what was judged. */
PD_INLINE int pd_entry_fast(struct __sk_buff *skb, struct pd_pkt *p, struct pd_flow *f, int again,
			    struct pd_listener *l, __u32 gen, volatile struct pd_config *cfg, __u8 proto,
			    const int preflight)
{
	__u32 seg_end = p->seq + p->payload_len;
	if (f->state == PD_FS_FINAL && f->verdict != PD_ACT_ALLOW) {
		PD_COUNT(PD_C_FAST_PATH);
		/* A refused connection: data or a FIN from the client is answered with a RST so
		 * the client does not linger; everything else is dropped. */
		if (f->verdict != PD_ACT_DROP && !(p->tcp_flags & PD_TCP_RST) &&
		    (p->payload_len || (p->tcp_flags & PD_TCP_FIN))) {
			struct pd_ctx *rc = pd_ctx_start(skb, p, gen, cfg, proto, l->id, preflight);
			if (rc) {
				if (p->tcp_flags & PD_TCP_FIN)
					rc->payload_len += 1; /* the FIN takes a sequence number */
				if (pd_build(skb, rc, PD_REPLY_RST_CLIENT, 0, 0, 1) == 0)
					return bpf_redirect(skb->ifindex, 0);
			}
		}
		return TC_ACT_SHOT;
	}
	if (f->state == PD_FS_FINAL && !again) {
		PD_COUNT(PD_C_FAST_PATH);
		/* timestamps matter while a copy of judged bytes may still come */
		if (!preflight && f->judged_len && !pd_srv_has(f, f->judged_seq + f->judged_len))
			pd_track_ts(skb, f, p);
		return TC_ACT_OK; /* allowed for the rest of the connection */
	}
	if (f->state != PD_FS_FINAL) {
		if (f->accumulating && !preflight && (p->tcp_flags & (PD_TCP_RST | PD_TCP_FIN)) &&
		    (!p->payload_len || (p->tcp_flags & PD_TCP_RST))) {
			/* A client that gives up on a partial head (a reset, or a FIN: the head can
			 * never end) frees its place in the table and its client's share: a RST or FIN
			 * from where the head's bytes end to the right edge of the server's window
			 * (bytes sent after those may not have passed here yet), as the server takes
			 * a RST in its window. */
			struct pd_accum *acc = bpf_map_lookup_elem(&pd_accum, &p->key);
			__u32 have_end = acc ? acc->start_seq + acc->len : 0;
			__u32 room = f->srv == PD_SRV_SEEN ? f->srv_edge - have_end : 65535;
			if (!acc || (p->seq - have_end <= room && room < (1u << 30))) {
				if (acc)
					bpf_map_delete_elem(&pd_accum, &p->key);
				pd_accum_end(f, &p->key);
			}
		}
		if (p->payload_len == 0 || (p->tcp_flags & PD_TCP_RST)) {
			PD_COUNT(PD_C_FAST_PATH);
			if (!preflight)
				pd_track_ts(skb, f, p);
			return TC_ACT_OK;
		}
		if (!f->accumulating && !again && !(p->tcp_flags & PD_TCP_URG) &&
		    pd_seq_before_eq(seg_end, f->next_seq)) {
			/* body bytes of an allowed request, or a retransmission of bytes before
			 * the last judged head */
			PD_COUNT(PD_C_FAST_PATH);
			if (!preflight)
				pd_track_ts(skb, f, p);
			return TC_ACT_OK;
		}
	}
	return PD_GO_ON;
}

/* ---- slow path, first: the segment as the server takes it ------------------------------
 * Decides a segment the server would discard, urgent data, and a copy of judged bytes
 * (the same ones pass, others get the fail mode); goes on with new head bytes. A re-entry
 * for the next head of the segment was checked on the first. */
PD_INLINE int pd_entry_check_segment(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_pkt *p,
				     struct pd_flow *f, int again, const int preflight)
{
	/* re-entered by the verdict stage for the next head of this segment? */
	int reentered = ctx->reenter;
	ctx->pipelined = ctx->reenter ? ctx->pipelined + 1 : 0;
	ctx->reenter = 0;
	if (reentered)
		return PD_GO_ON;

	/* Bytes the server's TCP would throw away are not what it receives: neither
	 * accumulated nor judged. The sender resends them if they were real. */
	int ig = pd_discard_check(skb, ctx, f, p->ttl);
	if (ig >= 0) {
		PD_COUNT(PD_C_IGNORED_BASE + (ig & (PD_IG_MAX - 1)));
		return TC_ACT_SHOT;
	}
	/* An urgent byte is cut out of the stream by the server (unless SO_OOBINLINE):
	 * the bytes judged would not be the bytes it reads. */
	if (p->tcp_flags & PD_TCP_URG)
		return pd_early_fail(skb, ctx, PD_R_URGENT);
	if (again) {
		int d = pd_older_differs(skb, ctx, f);
		if (d == PD_SAME)
			d = pd_judged_differs(skb, ctx, f);
		if (d == PD_DIFFERS)
			return pd_early_fail(skb, ctx, PD_R_INCONSISTENT);
		if (d == PD_UNCHECKED)
			return pd_early_fail(skb, ctx, PD_R_UNCHECKED);
		if (d == PD_NOT_YET) {
			PD_COUNT(PD_C_REASON_BASE + PD_R_OUT_OF_ORDER);
			return TC_ACT_SHOT;
		}
	}
	if (ctx->seg_has_ts && f->has_ts && (__s32)(ctx->seg_tsval - f->ts_recent) > 0)
		f->ts_recent = ctx->seg_tsval;
	if (f->state == PD_FS_FINAL ||
	    (!f->accumulating && pd_seq_before_eq(p->seq + p->payload_len, f->next_seq))) {
		PD_COUNT(PD_C_FAST_PATH);
		return TC_ACT_OK; /* the judged bytes, unchanged */
	}
	return PD_GO_ON;
}

/* The flow's partial head is given up: its entry goes, and the fail mode decides. */
PD_INLINE int pd_accum_fail(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_flow *f,
			    struct pd_pkt *p, __u8 reason)
{
	bpf_map_delete_elem(&pd_accum, &p->key);
	pd_accum_end(f, &p->key);
	return pd_early_fail(skb, ctx, reason);
}

/* ---- accumulation: a head begun in earlier segments (held in pd_accum) goes on -------- */
PD_INLINE int pd_head_continue(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_pkt *p, struct pd_flow *f,
			       __u32 max_head, const int preflight)
{
	struct pd_accum *acc = bpf_map_lookup_elem(&pd_accum, &p->key);
	if (!acc) {
		pd_accum_end(f, &p->key);
		return pd_early_fail(skb, ctx, PD_R_FLOW_TABLE_FULL);
	}
	__u32 seg_end = p->seq + p->payload_len;
	__u32 have_end = acc->start_seq + acc->len;
	if (pd_seq_before(have_end, p->seq)) {
		/* a gap: never judge around missing bytes; TCP resends them in order */
		PD_COUNT(PD_C_REASON_BASE + PD_R_OUT_OF_ORDER);
		return TC_ACT_SHOT;
	}
	/* Bytes before the head are body already passed; bytes we hold must be resent
	 * unchanged. */
	__u32 skip = 0;
	if (pd_seq_before(p->seq, acc->start_seq))
		skip = acc->start_seq - p->seq;
	if (skip >= p->payload_len)
		return TC_ACT_OK;
	__u32 held_pos = p->seq + skip - acc->start_seq;
	__u32 overlap = pd_seq_before(have_end, seg_end) ? have_end - (p->seq + skip)
							  : p->payload_len - skip;
	if (overlap > p->payload_len - skip || held_pos > PD_HEAD_MAX)
		return pd_early_fail(skb, ctx, PD_R_INCONSISTENT);
	if (pd_compare(skb, ctx, p->payload_off + skip, acc->buf, held_pos, overlap))
		return pd_accum_fail(skb, ctx, f, p, PD_R_INCONSISTENT);
	if (!pd_seq_before(have_end, seg_end))
		return TC_ACT_OK; /* pure retransmission of held bytes */
	__u32 old_len = acc->len;
	__u32 add = p->payload_len - skip - overlap;
	if (old_len >= max_head)
		return pd_accum_fail(skb, ctx, f, p, PD_R_HEAD_TOO_LARGE);
	if (add > max_head - old_len)
		add = max_head - old_len;
	if (pd_copy_in(skb, p->payload_off + skip + overlap, acc->buf, old_len, add) < 0)
		return pd_early_fail(skb, ctx, PD_R_BAD_PACKET);
	acc->len = old_len + add;
	__u32 from = old_len > 2 ? old_len - 2 : 0;
	int end = pd_head_end(ctx, acc->buf, from, acc->len);
	if (end < 0)
		return pd_accum_fail(skb, ctx, f, p, (__u8)-end);
	if (!end) {
		if (acc->len >= max_head)
			return pd_accum_fail(skb, ctx, f, p, PD_R_HEAD_TOO_LARGE);
		PD_COUNT(PD_C_HEAD_PARTIAL);
		return TC_ACT_OK; /* an incomplete head passes: the server cannot act on it */
	}
	if (pd_copy_acc(ctx, acc) < 0)
		return pd_early_fail(skb, ctx, PD_R_HEAD_TOO_LARGE);
	/* the entry stays: if the head is allowed it holds the judged bytes, against
	 * which a partial retransmission is compared */
	pd_accum_end(f, &p->key);
	ctx->head_held = PD_HELD_ALL;
	/* offset of the head's first byte relative to this segment (negative: earlier) */
	ctx->head_off = ctx->head.start_seq - p->seq;
	ctx->head_len = end;
	return pd_judge_head(skb, ctx);
}

/* ---- head start: the head starts inside this segment at next_seq ---------------------- */
PD_INLINE int pd_head_start(struct __sk_buff *skb, struct pd_ctx *ctx, struct pd_pkt *p, struct pd_flow *f,
			    __u32 max_head, volatile struct pd_config *cfg, const int preflight)
{
	if (pd_seq_before(f->next_seq, p->seq)) {
		PD_COUNT(PD_C_REASON_BASE + PD_R_OUT_OF_ORDER);
		return TC_ACT_SHOT; /* data ahead of the head start: wait for the missing bytes */
	}
	__u32 start = f->next_seq - p->seq;
	if (start >= p->payload_len)
		return TC_ACT_OK;
	__u32 avail = p->payload_len - start;
	__u32 take = avail > max_head ? max_head : avail;
	if (pd_copy_in(skb, p->payload_off + start, ctx->head.buf, 0, take) < 0)
		return pd_early_fail(skb, ctx, PD_R_BAD_PACKET);
	ctx->head.start_seq = f->next_seq;
	ctx->head.len = take;
	ctx->head_off = start;
	int end = pd_head_end(ctx, ctx->head.buf, 0, take);
	if (end < 0)
		return pd_early_fail(skb, ctx, (__u8)-end);
	if (!end) {
		if (take >= max_head)
			return pd_early_fail(skb, ctx, PD_R_HEAD_TOO_LARGE);
		/* a client's share of the table of partial heads (slow heads, held open) */
		if (!pd_partial_hold(&p->key, cfg->partial_per_client))
			return pd_early_fail(skb, ctx, PD_R_PARTIAL_HEADS);
		if (bpf_map_update_elem(&pd_accum, &p->key, &ctx->head, BPF_ANY) < 0) {
			pd_partial_release(&p->key);
			return pd_early_fail(skb, ctx, PD_R_FLOW_TABLE_FULL);
		}
		f->accumulating = 1;
		f->held = 0; /* the entry no longer holds the last judged head */
		PD_COUNT(PD_C_HEAD_PARTIAL);
		return TC_ACT_OK;
	}
	ctx->head_len = end;
	return pd_judge_head(skb, ctx);
}

/* A datagram to a listener's port (looked up only when some listener has quic: deny).
 * HTTP/3 to a TLS listener's port would carry its requests past the SNI stage: with
 * quic: deny the client falls back to TCP, where the ClientHello is judged. */
PD_INLINE int pd_entry_udp(struct pd_pkt *p, struct pd_listener *l, __u32 gen, const int preflight)
{
	if (!l->quic_deny)
		return TC_ACT_OK;
	if (!preflight) {
		pd_count(PD_C_QUIC_DENIED);
		__u32 g = gen & 1;
		__u32 *tag = bpf_map_lookup_elem(&pd_gen_tags, &g);
		pd_log_flow(&p->key, l->id, tag ? *tag : 0, PD_ACT_DROP, PD_R_NONE, PD_STAGE_ENTRY);
	}
	return TC_ACT_SHOT;
}

/* The entry program, in the order a packet meets its parts: which listener it is for, the
 * connection's start, the flow entry (the fast path), then the slow path: the segment as
 * the server takes it, and the head it continues or starts. */
PD_INLINE int pd_entry_run(struct __sk_buff *skb, __u32 gen, const int preflight)
{
	struct pd_pkt p = {};
	int r = pd_parse_packet(skb, &p);
	if (r == PD_P_SHORT) {
		__u32 want = skb->len < 256 ? skb->len : 256;
		if (bpf_skb_pull_data(skb, want) < 0)
			return TC_ACT_OK;
		r = pd_parse_packet(skb, &p);
	}
	if (r == PD_P_OTHER || r == PD_P_LATER_FRAG || r == PD_P_SHORT || r == PD_P_BAD)
		return TC_ACT_OK; /* not a packet we can attribute to a listener */
	volatile struct pd_config *cfg = &pd_cfg[gen];
	if (r == PD_P_UNWALKABLE) {
		/* An IPv6 header chain too long to walk: it may carry a listener's segment, which
		 * must never pass unjudged. The fail mode, whatever it carries (no listener or
		 * port is known: the event names the addresses only). */
		struct pd_ctx *uc = pd_ctx_start(skb, &p, gen, cfg, 0, PD_LISTENER_NONE, preflight);
		if (!uc)
			return TC_ACT_SHOT;
		return pd_fail_inline(uc, PD_R_IPV6_CHAIN);
	}
	if (r == PD_P_UDP && !cfg->quic_deny)
		return TC_ACT_OK;

	struct pd_listener_key lk = { .gen = gen, .port = p.dport };
	struct pd_listener *l = bpf_map_lookup_elem(&pd_listeners, &lk);
	if (!l || !pd_listener_addr_ok(l, &p))
		return TC_ACT_OK;
	if (r == PD_P_UDP)
		return pd_entry_udp(&p, l, gen, preflight);

	PD_COUNT(PD_C_PACKETS);
	__u8 proto = l->proto;

	if (r == PD_P_FRAGMENT) {
		/* Never judged on the first fragment alone, never passed as if it had been: the
		 * fail mode. Later fragments carry no ports; without the first, the server cannot
		 * reassemble them. */
		struct pd_ctx *fc = pd_ctx_start(skb, &p, gen, cfg, proto, l->id, preflight);
		if (!fc)
			return TC_ACT_SHOT;
		return pd_fail_inline(fc, PD_R_FRAGMENT);
	}

	struct pd_flow *f = bpf_map_lookup_elem(&pd_flows, &p.key);
	if ((p.tcp_flags & (PD_TCP_SYN | PD_TCP_ACK)) == PD_TCP_SYN) {
		r = pd_entry_syn(skb, &p, f, l, gen, cfg, proto, preflight);
		if (r != PD_GO_ON)
			return r;
	}
	if (!f) {
		r = pd_entry_no_flow(skb, &p, l, gen, cfg, proto, preflight, &f);
		if (r != PD_GO_ON)
			return r;
	}
	int again = p.payload_len && !(p.tcp_flags & PD_TCP_RST) &&
		    pd_overlaps_judged(f, p.seq, p.seq + p.payload_len);
	r = pd_entry_fast(skb, &p, f, again, l, gen, cfg, proto, preflight);
	if (r != PD_GO_ON)
		return r;

	/* ---- slow path: a request head starts or continues in this segment, or judged
	 * bytes arrive again ------------------------------------------------------------ */
	struct pd_ctx *ctx = pd_ctx_start(skb, &p, gen, cfg, proto, l->id, preflight);
	if (!ctx)
		return TC_ACT_SHOT;
	r = pd_entry_check_segment(skb, ctx, &p, f, again, preflight);
	if (r != PD_GO_ON)
		return r;
	if (f->state == PD_FS_CHUNKED)
		return pd_tail(skb, ctx, PD_STAGE_HTTP); /* the parser walks chunk framing */
	__u32 max_head = ctx->max_head;
	if (max_head == 0 || max_head > PD_HEAD_MAX)
		max_head = PD_HEAD_MAX;
	if (f->accumulating)
		return pd_head_continue(skb, ctx, &p, f, max_head, preflight);
	return pd_head_start(skb, ctx, &p, f, max_head, cfg, preflight);
}

SEC("tc")
int pd_entry(struct __sk_buff *skb)
{
	return pd_entry_run(skb, pd_active_gen & 1, 0);
}

/* Never attached: the controller runs it with BPF_PROG_TEST_RUN on requests synthesized
 * from a policy, against the prepared generation, before that generation goes live. */
SEC("tc")
int pd_preflight(struct __sk_buff *skb)
{
	return pd_entry_run(skb, pd_preflight_gen & 1, 1);
}

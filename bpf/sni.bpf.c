/* sni.bpf.c: the sni stage. Finds the server_name of the ClientHello the entry program
 * accumulated (possibly over several TCP segments and several TLS records), checking that
 * every length adds up, and matches it against the policy's sni rules (pd_match.h): the
 * first matching rule's action; missing_sni when there is no server_name. The verdict holds
 * for the life of the connection. */
#include "pd_common.h"
#include "pd_match.h"

#define PD_TLS_EXTENSIONS_MAX 128

struct pd_cb {
	struct pd_ctx *ctx;
};

PD_INLINE __u32 rd8(struct pd_ctx *ctx, __u32 p)
{
	return ctx->head.buf[PD_HEAD_IDX(p)];
}

PD_INLINE __u32 rd16(struct pd_ctx *ctx, __u32 p)
{
	return (rd8(ctx, p) << 8) | rd8(ctx, p + 1);
}

/* ---- records -> one contiguous handshake at buf[5..) --------------------------------- */
static long compact_cb(__u32 i, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_tls_compact *c = &ctx->work.compact;
	if (c->src >= c->end || c->bad)
		return 1;
	if (c->src == c->rec_end) { /* the next record's header: skip it */
		if (c->src + 5 > c->end || rd8(ctx, c->src) != 0x16) {
			c->bad = 1;
			return 1;
		}
		c->rec_end = c->src + 5 + rd16(ctx, c->src + 3);
		c->src += 5;
		return 0;
	}
	ctx->head.buf[PD_HEAD_IDX(c->dst)] = ctx->head.buf[PD_HEAD_IDX(c->src)];
	c->src++;
	c->dst++;
	return 0;
}

/* ---- the extension list ------------------------------------------------------------- */
static long ext_cb(__u32 i, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_tls_exts *e = &ctx->work.exts;
	if (e->bad || e->done)
		return 1;
	if (e->p == e->end) {
		e->done = 1;
		return 1;
	}
	if (e->p + 4 > e->end) {
		e->bad = PD_R_TLS_LENGTH;
		return 1;
	}
	__u32 type = rd16(ctx, e->p), len = rd16(ctx, e->p + 2);
	if (e->p + 4 + len > e->end) {
		e->bad = PD_R_TLS_LENGTH;
		return 1;
	}
	if (type == 0) { /* server_name (RFC 6066): a list holding one host_name */
		__u32 list = rd16(ctx, e->p + 4);
		if (e->sni_seen || len < 5 || list != len - 2 || rd8(ctx, e->p + 6) != 0) {
			e->bad = PD_R_TLS_BAD_SNI; /* two server_name extensions, or a list that does not add up */
			return 1;
		}
		__u32 n = rd16(ctx, e->p + 7);
		if (n == 0 || n + 3 != list) { /* exactly one name: RFC 6066 allows one host_name */
			e->bad = PD_R_TLS_BAD_SNI;
			return 1;
		}
		e->sni_seen = 1;
		e->sni_off = e->p + 9;
		e->sni_len = n;
	}
	e->p += 4 + len;
	return 0;
}

/* server_name -> ctx->host, lower-cased, one trailing dot removed. An IP literal (RFC 6066
 * does not permit one: its last label is all digits) is not a host name. */
static long sninorm_cb(__u32 k, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_sninorm *s = &ctx->work.sninorm;
	if (k >= s->n || s->bad)
		return 1;
	__u8 c = pd_lower(ctx->head.buf[PD_HEAD_IDX(s->off + k)]);
	if (!pd_is_name_char(c)) {
		s->bad = 1;
		return 1;
	}
	if (c == '.') {
		s->prev_digits = s->digits;
		s->digits = 1;
	} else if (c < '0' || c > '9') {
		s->digits = 0;
	}
	ctx->host[PD_HOST_IDX(s->out)] = c;
	s->out++;
	return 0;
}

PD_INLINE int normalize_sni(struct pd_ctx *ctx, __u32 off, __u32 n)
{
	if (n == 0 || n >= PD_HOST_MAX)
		return -1;
	struct pd_sninorm *s = &ctx->work.sninorm;
	__builtin_memset(s, 0, sizeof(*s));
	s->off = off;
	s->n = n;
	s->digits = 1;
	struct pd_cb cb = { .ctx = ctx };
	bpf_loop(PD_HOST_MAX, sninorm_cb, &cb, 0);
	__u32 out = s->out;
	if (s->bad || out == 0 || out >= PD_HOST_MAX)
		return -1;
	int last_digits = s->digits;
	if (ctx->host[PD_HOST_IDX(out - 1)] == '.') {
		out--;
		last_digits = s->prev_digits;
	}
	if (last_digits)
		return -1; /* an IPv4 literal (or a name no DNS zone can hold) */
	if (out == 0)
		return -1;
	ctx->host_norm_len = out;
	return 0;
}

PD_INLINE int bad_hello(struct __sk_buff *skb, struct pd_ctx *ctx, __u8 reason)
{
	pd_fail(ctx, reason);
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

SEC("tc")
int pd_sni(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_TLS)
		return pd_chain_next(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_SNI);

	__u32 held = ctx->head_len;
	if (held < 9 || held > PD_HEAD_MAX)
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH);
	__u32 first_end = 5 + rd16(ctx, 3);
	__u32 hs_end = 9 + ((rd8(ctx, 6) << 16) | rd16(ctx, 7)); /* after the handshake message */
	if (hs_end > first_end) {
		/* the ClientHello continues in later records: make it contiguous */
		struct pd_tls_compact *c = &ctx->work.compact;
		__builtin_memset(c, 0, sizeof(*c));
		c->src = c->dst = c->rec_end = first_end;
		c->end = held;
		struct pd_cb cb = { .ctx = ctx };
		bpf_loop(PD_HEAD_MAX, compact_cb, &cb, 0);
		if (c->bad || c->dst < hs_end)
			return bad_hello(skb, ctx, PD_R_TLS_LENGTH);
	} else if (hs_end < first_end) {
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH); /* bytes after the ClientHello in its record */
	}

	/* client_version(2) random(32) session_id cipher_suites compression_methods */
	__u32 p = 9 + 2 + 32;
	__u32 sid = rd8(ctx, p);
	if (sid > 32)
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH);
	p += 1 + sid;
	__u32 cs = rd16(ctx, p);
	if (cs < 2 || (cs & 1))
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH);
	p += 2 + cs;
	__u32 comp = rd8(ctx, p);
	if (comp < 1)
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH);
	p += 1 + comp;
	if (p > hs_end)
		return bad_hello(skb, ctx, PD_R_TLS_LENGTH);

	__u8 has_sni = 0;
	if (p < hs_end) {
		if (p + 2 > hs_end || p + 2 + rd16(ctx, p) != hs_end)
			return bad_hello(skb, ctx, PD_R_TLS_LENGTH); /* the extensions must fill the message exactly */
		struct pd_tls_exts *e = &ctx->work.exts;
		__builtin_memset(e, 0, sizeof(*e));
		e->p = p + 2;
		e->end = hs_end;
		struct pd_cb cb = { .ctx = ctx };
		bpf_loop(PD_TLS_EXTENSIONS_MAX, ext_cb, &cb, 0);
		if (e->bad || !e->done)
			return bad_hello(skb, ctx, e->bad ? e->bad : PD_R_TLS_LENGTH);
		if (e->sni_seen) {
			if (normalize_sni(ctx, e->sni_off, e->sni_len) < 0)
				return bad_hello(skb, ctx, PD_R_TLS_BAD_SNI);
			has_sni = 1;
		}
	}
	ctx->has_sni = has_sni;
	if (!has_sni) {
		ctx->action = ctx->missing_sni;
		return pd_chain_next(skb, ctx);
	}
	struct pd_host_val *v = pd_match_name(ctx, PD_SNI_KIND_OFFSET);
	if (v) {
		ctx->action = v->action;
		ctx->rule = PD_MAX_RULES - 1 - (v->host_id & (PD_MAX_RULES / 2 - 1));
		__u32 idx = (__u32)(ctx->gen & 1) * PD_MAX_RULES + (ctx->rule & (PD_MAX_RULES - 1));
		__u64 *hits = ctx->preflight ? 0 : bpf_map_lookup_elem(&pd_rule_hits, &idx);
		if (hits)
			*hits += 1;
	}
	return pd_chain_next(skb, ctx);
}

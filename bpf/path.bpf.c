/* path.bpf.c: the path stage. Normalizes the request path as nginx does before it matches
 * locations (query removed, every percent-escape decoded into its byte, dot segments
 * removed, repeated slashes merged; an encoded '/', '\\' or NUL is the fail mode), then finds the matched host's first route whose path and
 * methods match: exact and prefix patterns are hash lookups at the pattern lengths the
 * host uses (a bitmap), verified byte for byte. */
#include "pd_common.h"

PD_INLINE void emit(struct pd_ctx *ctx, struct pd_pathnorm *n, __u8 c)
{
	if (n->out >= PD_PATH_MAX - 4) {
		n->reason = PD_R_PATH_TOO_LONG;
		return;
	}
	ctx->path[PD_PATH_IDX(n->out)] = c;
	n->out++;
	n->seg_len++;
	if (c != '.')
		n->all_dots = 0;
}

/* A segment ends (at '/' or the end of the path). Returns 1 if the slash that ended it
 * must not be written (the output already ends with '/'). */
PD_INLINE int end_segment(struct pd_ctx *ctx, struct pd_pathnorm *n)
{
	if (n->seg_len == 0)
		return 1; /* empty segment: repeated slashes merge */
	if (n->all_dots && n->seg_len == 1) {
		n->out = n->seg_start; /* "." */
		return 1;
	}
	if (n->all_dots && n->seg_len == 2) {
		n->out = n->seg_start; /* ".." removes itself and the segment before it */
		if (n->depth > 0) {
			n->depth--;
			n->out = ctx->segs[n->depth & (PD_PATH_SEGS - 1)];
		}
		return 1;
	}
	if (n->depth >= PD_PATH_SEGS) {
		n->reason = PD_R_PATH_TOO_LONG;
		return 1;
	}
	ctx->segs[n->depth & (PD_PATH_SEGS - 1)] = n->seg_start;
	n->depth++;
	return 0;
}

PD_INLINE void new_segment(struct pd_pathnorm *n)
{
	n->seg_start = n->out;
	n->seg_len = 0;
	n->all_dots = 1;
}

struct pd_cb {
	struct pd_ctx *ctx;
};

static long norm_cb(__u32 i, struct pd_cb *cb)
{
	struct pd_ctx *ctx = cb->ctx;
	struct pd_pathnorm *n = &ctx->work.pathnorm;
	if (n->in >= n->in_end || n->reason || n->stop)
		return 1;
	__u8 c = ctx->head.buf[PD_HEAD_IDX(n->in)];
	n->in++;

	if (n->pct) {
		int v = pd_hexval(c);
		if (v < 0) {
			n->reason = PD_R_BAD_PATH;
			return 1;
		}
		if (n->pct == 1) {
			n->hi = v;
			n->pct = 2;
			return 0;
		}
		n->pct = 0;
		__u8 b = (n->hi << 4) | v;
		if (b == '/' || b == '\\' || b == 0) {
			n->reason = PD_R_BAD_PATH;
			return 1;
		}
		/* the byte itself, whatever it is: nginx decodes every escape before it matches
		 * a location, so "/a%40b" is "/a@b" and "/caf%C3%A9" is those two bytes */
		emit(ctx, n, b);
		return 0;
	}
	switch (c) {
	case '%':
		n->pct = 1;
		return 0;
	case '?':
		n->stop = 1;
		return 1;
	case '#':
	case '\\':
		n->reason = PD_R_BAD_PATH;
		return 1;
	case '/':
		if (!end_segment(ctx, n))
			emit(ctx, n, '/');
		new_segment(n);
		return 0;
	}
	if (c <= 0x20 || c >= 0x7f) {
		n->reason = PD_R_BAD_PATH;
		return 1;
	}
	emit(ctx, n, c);
	return 0;
}

PD_INLINE __u8 normalize_path(struct pd_ctx *ctx)
{
	struct pd_pathnorm *n = &ctx->work.pathnorm;
	__u32 t = ctx->target_off, len = ctx->target_len;

	ctx->path[0] = '/';
	ctx->path_len = 1;
	if (len == 0)
		return PD_R_NONE; /* absolute-form without a path: "/" */
	__u8 first = ctx->head.buf[PD_HEAD_IDX(t)];
	if (first == '*' && len == 1) {
		ctx->path[0] = '*'; /* asterisk-form (OPTIONS *): matches no route */
		return PD_R_NONE;
	}
	if (first != '/')
		return PD_R_BAD_PATH;
	__builtin_memset(n, 0, sizeof(*n));
	n->in = t + 1;
	n->in_end = t + len;
	n->out = 1;
	new_segment(n);
	struct pd_cb cb = { .ctx = ctx };
	bpf_loop(PD_HEAD_MAX, norm_cb, &cb, 0);
	if (!n->reason && n->pct)
		n->reason = PD_R_BAD_PATH;
	if (n->reason)
		return n->reason;
	end_segment(ctx, n);
	__u32 out = n->out;
	if (out == 0 || out > PD_PATH_MAX) { /* the leading '/' is never removed */
		ctx->path[0] = '/';
		out = 1;
	}
	ctx->path_len = out;
	return n->reason;
}

/* ---- route lookup ----------------------------------------------------------------- */
struct match {
	struct pd_ctx *ctx;
	__u32 len;       /* bytes of the path considered for prefixes (<= PD_PATTERN_MAX - 1) */
	__u64 h;
	__u32 best;      /* earliest matching rule */
	struct pd_route_slot slot;
};

PD_INLINE int pattern_equal(struct pd_ctx *ctx, struct pd_route_val *v, __u32 n)
{
	if (v->pattern_len != n || n > PD_PATTERN_MAX)
		return 0;
	for (__u32 k = 0; k < PD_PATTERN_MAX; k++) {
		if (k >= n)
			break;
		if (ctx->path[k & (PD_PATTERN_MAX - 1)] != v->pattern[k & (PD_PATTERN_MAX - 1)])
			return 0;
	}
	return 1;
}

PD_INLINE void route_consider(struct match *m, __u32 kind, __u32 len, __u64 hash)
{
	struct pd_route_key k = {
		.gen = m->ctx->gen, .host_id = m->ctx->host_id, .kind = kind, .len = len, .hash = hash,
	};
	struct pd_route_val *v = bpf_map_lookup_elem(&pd_routes, &k);
	if (!v || !pattern_equal(m->ctx, v, len))
		return;
	for (__u32 s = 0; s < PD_ROUTE_SLOTS; s++) {
		if (s >= v->nslots)
			break;
		struct pd_route_slot *sl = &v->slots[s];
		if (sl->methods && !(sl->methods & m->ctx->method))
			continue; /* other methods do not match this route */
		if (sl->rule < m->best) {
			m->best = sl->rule;
			__builtin_memcpy(&m->slot, sl, sizeof(m->slot));
		}
		return; /* later slots of this key come later in the policy */
	}
}

static long match_cb(__u32 i, struct match *m)
{
	if (i >= m->len)
		return 1;
	m->h = pd_hash_byte(m->h, m->ctx->path[i & (PD_PATTERN_MAX - 1)]);
	__u32 l = i + 1;
	if (m->ctx->prefix_lens[(l >> 3) & (PD_PATTERN_MAX / 8 - 1)] & (1u << (l & 7)))
		route_consider(m, PD_ROUTE_PREFIX, l, m->h);
	return 0;
}

SEC("tc")
int pd_path(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_HTTP)
		return pd_chain_next(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_PATH);

	__u8 r = normalize_path(ctx);
	if (r) {
		pd_fail(ctx, r);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	if (ctx->host_id == PD_RULE_NONE)
		return pd_chain_next(skb, ctx); /* no host matched: default_action */

	struct match m = { .ctx = ctx, .h = pd_hash_init(ctx->hash_seed), .best = PD_RULE_NONE };
	m.len = ctx->path_len < PD_PATTERN_MAX ? ctx->path_len : PD_PATTERN_MAX - 1;
	bpf_loop(PD_PATTERN_MAX, match_cb, &m, 0);
	if (ctx->path_len < PD_PATTERN_MAX)
		route_consider(&m, PD_ROUTE_EXACT, ctx->path_len, m.h);

	if (m.best != PD_RULE_NONE) {
		ctx->rule = m.best;
		ctx->action = m.slot.action;
		ctx->jwt = m.slot.jwt;
		ctx->ratelimit = m.slot.ratelimit;
		ctx->jwt_require = m.slot.jwt_require;
		__u32 idx = (__u32)(ctx->gen & 1) * PD_MAX_RULES + (m.best & (PD_MAX_RULES - 1));
		__u64 *hits = ctx->preflight ? 0 : bpf_map_lookup_elem(&pd_rule_hits, &idx);
		if (hits)
			*hits += 1;
	}
	return pd_chain_next(skb, ctx);
}

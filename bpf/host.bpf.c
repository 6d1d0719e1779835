/* host.bpf.c: the host stage. Matches the normalized authority against the policy's host
 * patterns without scanning them: one keyed hash computed right to left gives, at every
 * label boundary, the hash of that suffix, so "*.suffix" patterns are hash lookups, as
 * are the exact name and "*". Every hash hit is verified against the stored pattern. The
 * earliest matching entry of the policy's hosts list wins. */
#include "pd_common.h"

struct host_walk {
	struct pd_ctx *ctx;
	__u32 len;
	__u64 h;
	__u32 best;      /* host_id of the earliest match */
	__u32 best_kind;
	__u64 best_hash;
};

/* ctx->host[at..at+n) == val->name[0..n) */
PD_INLINE int host_equal(struct pd_ctx *ctx, __u32 at, struct pd_host_val *val, __u32 n)
{
	if (val->name_len != n || n > PD_PATTERN_MAX)
		return 0;
	for (__u32 k = 0; k < PD_PATTERN_MAX; k++) {
		if (k >= n)
			break;
		if (ctx->host[PD_HOST_IDX(at + k)] != val->name[k & (PD_PATTERN_MAX - 1)])
			return 0;
	}
	return 1;
}

PD_INLINE void consider(struct host_walk *w, __u32 kind, __u64 hash, __u32 at)
{
	struct pd_host_key k = { .gen = w->ctx->gen, .kind = kind, .hash = hash };
	struct pd_host_val *v = bpf_map_lookup_elem(&pd_hosts, &k);
	if (!v || v->host_id >= w->best)
		return;
	if (kind != PD_HOST_ANY && !host_equal(w->ctx, at, v, w->len - at))
		return; /* a hash collision: no pattern of this policy has this name */
	w->best = v->host_id;
	w->best_kind = kind;
	w->best_hash = hash;
}

static long host_cb(__u32 i, struct host_walk *w)
{
	if (i >= w->len)
		return 1;
	__u32 at = w->len - 1 - i;
	w->h = pd_hash_byte(w->h, w->ctx->host[PD_HOST_IDX(at)]);
	if (at > 0 && w->ctx->host[PD_HOST_IDX(at - 1)] == '.')
		consider(w, PD_HOST_WILD, w->h, at);
	return 0;
}

SEC("tc")
int pd_host(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_HTTP)
		return pd_chain_next(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_HOST);

	struct host_walk w = {
		.ctx = ctx, .len = ctx->host_norm_len, .h = pd_hash_init(ctx->hash_seed),
		.best = PD_RULE_NONE,
	};
	if (w.len > PD_HOST_MAX - 1)
		w.len = PD_HOST_MAX - 1;
	bpf_loop(PD_HOST_MAX, host_cb, &w, 0);
	consider(&w, PD_HOST_EXACT, w.h, 0);
	consider(&w, PD_HOST_ANY, 0, 0);

	ctx->host_id = w.best;
	if (w.best != PD_RULE_NONE) {
		struct pd_host_key k = { .gen = ctx->gen, .kind = w.best_kind, .hash = w.best_hash };
		struct pd_host_val *v = bpf_map_lookup_elem(&pd_hosts, &k);
		if (v)
			__builtin_memcpy(ctx->prefix_lens, v->prefix_lens, sizeof(ctx->prefix_lens));
		else
			ctx->host_id = PD_RULE_NONE; /* replaced under us: treat as no match */
	}
	return pd_chain_next(skb, ctx);
}

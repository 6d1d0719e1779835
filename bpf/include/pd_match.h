/* pd_match.h: matching a normalized name (ctx->host) against exact, "*.suffix" and "*"
 * patterns without scanning them: one keyed hash computed right to left gives, at every
 * label boundary, the hash of that suffix, so each pattern form is a hash lookup. Every hit
 * is verified against the stored pattern; the earliest policy entry wins. Used by the host
 * stage (HTTP authority) and the sni stage (TLS server_name), each with its own key kinds. */
#ifndef PD_MATCH_H
#define PD_MATCH_H

#include "pd_common.h"

struct pd_name_walk {
	struct pd_ctx *ctx;
	__u32 len;
	__u32 kind_base; /* 0: hosts, PD_SNI_KIND_OFFSET: sni rules */
	__u64 h;
	__u32 best;      /* id of the earliest matching entry */
	__u32 best_kind;
	__u64 best_hash;
};

/* ctx->host[at..at+n) == val->name[0..n) */
PD_INLINE int pd_name_equal(struct pd_ctx *ctx, __u32 at, struct pd_host_val *val, __u32 n)
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

PD_INLINE void pd_name_consider(struct pd_name_walk *w, __u32 kind, __u64 hash, __u32 at)
{
	struct pd_host_key k = { .gen = w->ctx->gen, .kind = kind + w->kind_base, .hash = hash };
	struct pd_host_val *v = bpf_map_lookup_elem(&pd_hosts, &k);
	if (!v || v->host_id >= w->best)
		return;
	if (kind != PD_HOST_ANY && !pd_name_equal(w->ctx, at, v, w->len - at))
		return; /* a hash collision: no pattern of this policy has this name */
	w->best = v->host_id;
	w->best_kind = kind + w->kind_base;
	w->best_hash = hash;
}

static long pd_name_cb(__u32 i, struct pd_name_walk *w)
{
	if (i >= w->len)
		return 1;
	__u32 at = w->len - 1 - i;
	w->h = pd_hash_byte(w->h, w->ctx->host[PD_HOST_IDX(at)]);
	if (at > 0 && w->ctx->host[PD_HOST_IDX(at - 1)] == '.')
		pd_name_consider(w, PD_HOST_WILD, w->h, at);
	return 0;
}

/* The earliest entry matching ctx->host[0..host_norm_len); its value, or NULL. */
PD_INLINE struct pd_host_val *pd_match_name(struct pd_ctx *ctx, __u32 kind_base)
{
	struct pd_name_walk w = {
		.ctx = ctx, .len = ctx->host_norm_len, .kind_base = kind_base,
		.h = pd_hash_init(ctx->hash_seed), .best = PD_RULE_NONE,
	};
	if (w.len > PD_HOST_MAX - 1)
		w.len = PD_HOST_MAX - 1;
	bpf_loop(PD_HOST_MAX, pd_name_cb, &w, 0);
	pd_name_consider(&w, PD_HOST_EXACT, w.h, 0);
	pd_name_consider(&w, PD_HOST_ANY, 0, 0);
	ctx->host_hash = w.h;
	if (w.best == PD_RULE_NONE)
		return 0;
	struct pd_host_key k = { .gen = ctx->gen, .kind = w.best_kind, .hash = w.best_hash };
	return bpf_map_lookup_elem(&pd_hosts, &k);
}

#endif /* PD_MATCH_H */

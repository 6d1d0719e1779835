/* ratelimit.bpf.c: the rate-limit stage. A route that names a limit draws one token per
 * request from the bucket of the request's key (client address or /64, the verified
 * token's sub, the host, the route, or one global bucket). Buckets are shared by every CPU
 * and exact: a bpf_spin_lock around integer credit arithmetic (pd_bucket.h). Over the limit:
 * reject (the verdict stage answers 429 with a Retry-After of when a token will be there)
 * or drop. A key the request does not have (jwt_sub without a verified token) is the fail
 * mode. Preflight probes draw no tokens. */
#include "pd_common.h"
#include "pd_bucket.h"

SEC("tc")
int pd_ratelimit(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_HTTP || !ctx->ratelimit || ctx->action != PD_ACT_ALLOW || ctx->preflight)
		return pd_chain_next(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_RATELIMIT);

	__u32 li = (ctx->ratelimit - 1) & (PD_RL_LIMITS - 1);
	__u32 idx = (__u32)(ctx->gen & 1) * PD_RL_LIMITS + li;
	struct pd_rl_limit *lim = bpf_map_lookup_elem(&pd_rl_limits, &idx);
	if (!lim || !lim->cost) {
		pd_fail(ctx, PD_R_RL_NO_KEY);
		return pd_tail(skb, ctx, PD_STAGE_VERDICT);
	}
	ctx->rl_index = li;

	struct pd_rl_bucket_key key = { .id = lim->id, .kind = lim->key };
	switch (lim->key) {
	case PD_RLK_CLIENT_IP:
		key.k[0] = ctx->key.saddr[0];
		if (ctx->family == 6)
			key.k[0] |= (__u64)ctx->key.saddr[1] << 32; /* the /64 */
		key.k[1] = ctx->family;
		break;
	case PD_RLK_JWT_SUB:
		if (!ctx->jwt_sub) {
			pd_fail(ctx, PD_R_RL_NO_KEY);
			return pd_tail(skb, ctx, PD_STAGE_VERDICT);
		}
		key.k[0] = ctx->jwt_sub;
		break;
	case PD_RLK_HOST:
		key.k[0] = ctx->host_hash;
		break;
	case PD_RLK_ROUTE:
		key.k[0] = ctx->rule;
		break;
	default: /* global */
		break;
	}

	__u64 now = bpf_ktime_get_ns();
	struct pd_rl_bucket *b = bpf_map_lookup_elem(&pd_rl_buckets, &key);
	if (!b) {
		/* a new bucket, while the limit is within its share of the table */
		__u64 *held = bpf_map_lookup_elem(&pd_rl_counts, &lim->id);
		if (!lim->max_buckets || (held && *held < lim->max_buckets)) {
			struct pd_rl_bucket fresh = { .credit = lim->cap, .last_ns = now }; /* a new bucket is full */
			if (bpf_map_update_elem(&pd_rl_buckets, &key, &fresh, BPF_NOEXIST) == 0 && held)
				__sync_fetch_and_add(held, 1);
			b = bpf_map_lookup_elem(&pd_rl_buckets, &key); /* ours, or another CPU's just now */
		}
		if (!b) {
			/* past the share, or the table is full: one of the limit's shared buckets, the
			 * same one for the same key */
			struct pd_rl_bucket_key shared = { .id = lim->id, .kind = PD_RLK_SHARED };
			__u64 mix = (key.k[0] ^ (key.k[1] << 17) ^ key.k[1]) * 0x9E3779B97F4A7C15ULL;
			shared.k[0] = (mix >> 60) & (PD_RL_SPREAD - 1);
			b = bpf_map_lookup_elem(&pd_rl_buckets, &shared);
			pd_count(PD_C_RL_SHARED);
		}
		if (!b) {
			pd_fail(ctx, PD_R_FLOW_TABLE_FULL);
			return pd_tail(skb, ctx, PD_STAGE_VERDICT);
		}
	}

	__u64 wait_ns = 0;
	bpf_spin_lock(&b->lock);
	int taken = pd_bucket_take(b, lim, now, &wait_ns);
	bpf_spin_unlock(&b->lock);

	__u32 hit = (idx * 2 + !taken) & (PD_GENERATIONS * PD_RL_LIMITS * 2 - 1);
	__u64 *n = bpf_map_lookup_elem(&pd_rl_hits, &hit);
	if (n)
		*n += 1;
	if (taken) {
		pd_count(PD_C_RL_ALLOWED);
		return pd_chain_next(skb, ctx);
	}
	pd_count(PD_C_RL_LIMITED);
	__u64 secs = (wait_ns + 999999999ULL) / 1000000000ULL; /* whole seconds, rounded up */
	ctx->retry_after = secs == 0 ? 1 : secs > 0xffffffffULL ? 0xffffffffU : (__u32)secs;
	ctx->action = lim->action == PD_ACT_DROP ? PD_ACT_DROP : PD_ACT_REJECT;
	return pd_tail(skb, ctx, PD_STAGE_VERDICT);
}

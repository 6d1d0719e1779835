/* host.bpf.c: the host stage. Matches the normalized authority against the policy's host
 * patterns (pd_match.h: hash lookups per label suffix, never a scan); the earliest matching
 * entry of the policy's hosts list wins, and its route prefix lengths go to the path stage. */
#include "pd_common.h"
#include "pd_match.h"

SEC("tc")
int pd_host(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_ctx_get();
	if (!ctx)
		return TC_ACT_SHOT;
	if (ctx->proto != PD_PROTO_HTTP)
		return pd_chain_next(skb, ctx);
	pd_stage_enter(ctx, PD_STAGE_HOST);

	struct pd_host_val *v = pd_match_name(ctx, 0);
	ctx->host_id = v ? v->host_id : PD_RULE_NONE;
	if (v)
		__builtin_memcpy(ctx->prefix_lens, v->prefix_lens, sizeof(ctx->prefix_lens));
	return pd_chain_next(skb, ctx);
}

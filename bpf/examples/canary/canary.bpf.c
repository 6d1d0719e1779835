/* canary: an example of an operator's own stage (docs/stages.md), built outside policyd's
 * tree against its published header. It refuses HTTP requests that carry the header
 *
 *     X-Canary: <CANARY_VALUE>          (default "block"; case of the name does not matter)
 *
 * with the policy's deny (403), and passes everything else to the next stage: the kind of
 * switch an operator flips to cut a client or a canary build off at the gateway. Build:
 *
 *     clang -O2 -g -target bpf -I/usr/include/policyd/bpf -I/usr/include/$(gcc -print-multiarch) \
 *           -c canary.bpf.c -o canary.bpf.o
 *
 * and name it in the policy:  stages: [{name: canary, object: /path/canary.bpf.o, after: path}]
 */
#include <policyd/stage.h>

#ifndef CANARY_VALUE
#define CANARY_VALUE "block"
#endif

SEC("tc")
int canary(struct __sk_buff *skb)
{
	struct pd_ctx *ctx = pd_stage_begin();
	if (!ctx)
		return TC_ACT_SHOT;
	if (!pd_stage_is_http(ctx))
		return pd_stage_pass(skb, ctx);
	__u32 off = 0, len = 0;
	if (!pd_stage_header(ctx, "x-canary", 8, &off, &len))
		return pd_stage_pass(skb, ctx);
	const char want[] = CANARY_VALUE;
	if (len != sizeof(want) - 1)
		return pd_stage_pass(skb, ctx);
#ifdef CANARY_BROKEN
	/* for the tests: an access the verifier refuses (an unchecked offset into the head) */
	if (ctx->head.buf[off] == want[0])
		return pd_stage_refuse(skb, ctx, PD_ACT_DENY);
#endif
	for (__u32 k = 0; k < sizeof(want) - 1; ++k)
		if (pd_stage_byte(ctx, off + k) != (__u8)want[k])
			return pd_stage_pass(skb, ctx);
	return pd_stage_refuse(skb, ctx, PD_ACT_DENY);
}


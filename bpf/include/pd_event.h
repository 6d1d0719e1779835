/* pd_event.h: decision events — a refused request or handshake, or a fail-mode decision —
 * sent to the daemon through the ring buffer pd_log within a per-CPU budget the daemon sets
 * (pd_runtime.log_rate per second, log_burst at once). Called only where a decision is
 * taken (the verdict stage, the inline fail modes), never on the fast path. */
#ifndef PD_EVENT_H
#define PD_EVENT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pd_state.h"
#include "pd_maps.h"

static __always_inline void pd_log_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pd_stats, &idx);
	if (v)
		*v += 1;
}

/* One event from this CPU's budget: 1 if it may be sent. Per-CPU, so no lock: a CPU runs
 * one TC program at a time. Credit is kept in 1e-9 events: log_rate per second adds exactly
 * log_rate per ns, and every bound below keeps the arithmetic within 64 bits (log_rate and
 * log_burst are at most 2^32, so cap < 2^62). */
static __always_inline int pd_log_admit(void)
{
	__u32 zero = 0;
	struct pd_runtime *rt = bpf_map_lookup_elem(&pd_runtime, &zero);
	struct pd_log_budget *b = bpf_map_lookup_elem(&pd_log_budget, &zero);
	if (!rt || !b)
		return 0;
	__u64 rate = rt->log_rate, burst = rt->log_burst;
	if (rate == 0 || burst == 0)
		return 0; /* events off */
	__u64 cap = burst * PD_LOG_UNIT;
	__u64 now = bpf_ktime_get_ns();
	__u64 credit = b->credit;
	if (credit > cap)
		credit = cap; /* a burst made smaller since */
	if (b->last_ns == 0) {
		credit = cap; /* a budget never used starts full */
	} else if (now > b->last_ns) {
		__u64 idle = now - b->last_ns;
		/* idle * rate would only matter up to the room left: compare first, no overflow */
		if (idle >= (cap - credit) / rate + 1)
			credit = cap;
		else
			credit += idle * rate;
		if (credit > cap)
			credit = cap;
	}
	b->last_ns = now;
	if (credit < PD_LOG_UNIT) {
		b->credit = credit;
		return 0;
	}
	b->credit = credit - PD_LOG_UNIT;
	return 1;
}

/* An event to fill, or NULL (over budget: PD_C_EV_SUPPRESSED; ring buffer full: PD_C_EV_LOST). */
static __always_inline struct pd_event_decision *pd_log_begin(void)
{
	if (!pd_log_admit()) {
		pd_log_count(PD_C_EV_SUPPRESSED);
		return 0;
	}
	struct pd_event_decision *e = bpf_ringbuf_reserve(&pd_log, sizeof(*e), 0);
	if (!e) {
		pd_log_count(PD_C_EV_LOST);
		return 0;
	}
	e->type = PD_EV_DECISION;
	e->ktime_ns = bpf_ktime_get_ns();
	e->method = 0;
	e->status = 0;
	e->jwt_reason = 0;
	e->ratelimit = 0;
	e->proto = 0;
	e->host_len = 0;
	e->path_len = 0;
	e->pad = 0;
	return e;
}

static __always_inline void pd_log_end(struct pd_event_decision *e)
{
	bpf_ringbuf_submit(e, 0);
	pd_log_count(PD_C_EV_SENT);
}

/* A decision taken without a context (the flow table refused a new connection). */
static __always_inline void pd_log_flow(const struct pd_flow_key *key, __u16 listener, __u32 gen_tag, __u8 action,
					__u8 reason, __u8 stage)
{
	struct pd_event_decision *e = pd_log_begin();
	if (!e)
		return;
	e->gen_tag = gen_tag;
	e->rule = PD_RULE_NONE;
	e->listener = listener;
	e->action = action;
	e->reason = reason;
	e->stage = stage;
	__builtin_memcpy(&e->flow, key, sizeof(e->flow));
	pd_log_end(e);
}

/* A decision on the packet in ctx: action taken, HTTP status answered (0: none), the stage
 * that decided. Probes of a prepared generation are not traffic: no event. A BPF function
 * rather than inlined: every pd_tail of every stage reaches it (a missed tail call is a
 * decision), and one copy per program keeps them small. */
static __noinline __attribute__((unused)) void pd_log_ctx(struct pd_ctx *ctx, __u8 action, __u16 status, __u8 stage)
{
	if (ctx->preflight)
		return;
	struct pd_event_decision *e = pd_log_begin();
	if (!e)
		return;
	e->gen_tag = ctx->gen_tag;
	e->rule = ctx->rule;
	e->method = ctx->method;
	e->listener = ctx->listener;
	e->status = status;
	e->action = action;
	e->reason = ctx->reason;
	e->jwt_reason = action == PD_ACT_UNAUTH ? ctx->jwt_reason : 0;
	e->stage = stage;
	e->proto = ctx->proto;
	e->ratelimit = ctx->ratelimit;
	__builtin_memcpy(&e->flow, &ctx->key, sizeof(e->flow));
	/* The normalized host and path as far as the stages got. Whole fields are copied (a
	 * constant size the verifier need not reason about); the lengths say what is valid. */
	__u32 n = ctx->host_norm_len;
	e->host_len = n > PD_HOST_MAX ? PD_HOST_MAX : n;
	n = ctx->path_len;
	e->path_len = n > PD_PATH_MAX ? PD_PATH_MAX : n;
	__builtin_memcpy(e->host, ctx->host, PD_LOG_HOST);
	__builtin_memcpy(e->path, ctx->path, PD_LOG_PATH);
	pd_log_end(e);
}

#endif /* PD_EVENT_H */

/* pd_maps.h: the maps every policyd BPF object declares. The controller creates them once
 * (from the entry object) and hands the same fds to every stage object (bpf_map__reuse_fd),
 * so all stages see one set. Sizes marked "set at load" are overridden by the controller. */
#ifndef PD_MAPS_H
#define PD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pd_state.h" /* pd_scratch holds a pd_ctx */

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, PD_PROG_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} pd_progs SEC(".maps");

/* next stage after stage s in generation g: pd_chain[pd_slot(g, s)] */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PD_PROG_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} pd_chain SEC(".maps");

/* The active generation and per-generation config are globals of the entry object
 * (pd_active_gen, pd_cfg[]): direct loads on the packet path, written by the controller. */

/* The tag of the policy each half holds. The controller changes a half's tag before it
 * refills that half, so a packet that started in it and is still in flight sees another tag
 * at its verdict: counted as PD_C_GEN_MISMATCH (it must stay 0). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PD_GENERATIONS);
	__type(key, __u32);
	__type(value, __u32);
} pd_gen_tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2048);
	__type(key, struct pd_listener_key);
	__type(value, struct pd_listener);
} pd_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144); /* set at load: limits.max_flows */
	__type(key, struct pd_flow_key);
	__type(value, struct pd_flow);
} pd_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144); /* set at load: limits.max_flows */
	__type(key, struct pd_flow_key);
	__type(value, struct pd_syn);
} pd_syn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2048); /* set at load */
	__type(key, struct pd_flow_key);
	__type(value, struct pd_accum);
} pd_accum SEC(".maps");

/* Partial heads each client holds in pd_accum (pd_partial_hold/release in pd_segment.h; the
 * daemon writes the true counts back every few seconds): no one client's slow heads fill
 * the table and push out everyone else's half-received heads. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2048); /* set at load: as pd_accum */
	__type(key, struct pd_src_key);
	__type(value, __u64);
} pd_accum_src SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct pd_host_key);
	__type(value, struct pd_host_val);
} pd_hosts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4 * PD_MAX_RULES);
	__type(key, struct pd_route_key);
	__type(value, struct pd_route_val);
} pd_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pd_ctx);
} pd_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PD_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pd_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PD_GENERATIONS * PD_MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} pd_rule_hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PD_GENERATIONS * PD_JWT_PROVIDERS);
	__type(key, __u32);
	__type(value, struct pd_jwt_provider);
} pd_jwt_providers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 16384);
	__type(key, struct pd_jwt_claim_key);
	__type(value, __u64);
} pd_jwt_claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct pd_jwt_cache_key);
	__type(value, struct pd_jwt_cache_val);
} pd_jwt_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pd_runtime);
} pd_runtime SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 21); /* 2 MiB: ~500 tokens in flight to the daemon */
} pd_events SEC(".maps");

/* Decision events for the operator (pd_event.h); apart from pd_events, which the JWT stage
 * depends on. 1 MiB: ~3000 events, against a budget of a few hundred per second per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} pd_log SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pd_log_budget);
} pd_log_budget SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PD_GENERATIONS * PD_RL_LIMITS);
	__type(key, __u32);
	__type(value, struct pd_rl_limit);
} pd_rl_limits SEC(".maps");

/* Not LRU (a spin lock is not allowed there, and a flood of new keys must not evict busy
 * buckets): the daemon forgets buckets idle long enough to be full again, which changes
 * nothing (a new bucket starts full). A key that finds the table full uses its limit's
 * shared bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144); /* set at load: limits.max_flows */
	__type(key, struct pd_rl_bucket_key);
	__type(value, struct pd_rl_bucket);
} pd_rl_buckets SEC(".maps");

/* Buckets each limit holds (key: pd_rl_limit.id): the stage adds one per bucket it makes, the
 * daemon writes the true count back when it forgets idle buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PD_GENERATIONS * PD_RL_LIMITS);
	__type(key, __u64);
	__type(value, __u64);
} pd_rl_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PD_GENERATIONS * PD_RL_LIMITS * 2);
	__type(key, __u32);
	__type(value, __u64);
} pd_rl_hits SEC(".maps"); /* [(gen * PD_RL_LIMITS + limit) * 2 + limited] */

#endif /* PD_MAPS_H */

/* pd_bucket.h: the token bucket arithmetic of the rate-limit stage, exact in integers.
 * Credit accrues at `add` per ns up to `cap`; a token costs `cost`. Kept apart (and free of
 * helper calls) so it runs under a bpf_spin_lock, and so tests drive it with any clock. */
#ifndef PD_BUCKET_H
#define PD_BUCKET_H

#include "pd_abi.h"

/* Refill to `now` and take one token. Returns 1 if taken; else 0 with *wait_ns the time
 * until a token will be there (if nobody else takes it first). A clock that reads earlier
 * than the last refill (another CPU refilled a moment later) adds nothing. */
static __always_inline int pd_bucket_take(struct pd_rl_bucket *b, const struct pd_rl_limit *l, __u64 now,
					  __u64 *wait_ns)
{
	__u64 credit = b->credit;
	if (now > b->last_ns) {
		__u64 idle = now - b->last_ns;
		if (idle >= l->fill_ns || credit >= l->cap)
			credit = l->cap;
		else {
			credit += idle * l->add; /* idle < fill_ns: at most cap + add, no overflow */
			if (credit > l->cap)
				credit = l->cap;
		}
		b->last_ns = now;
	}
	if (credit > l->cap)
		credit = l->cap; /* a limit made smaller since */
	if (credit >= l->cost) {
		b->credit = credit - l->cost;
		return 1;
	}
	b->credit = credit;
	__u64 need = l->cost - credit;
	*wait_ns = l->add ? (need + l->add - 1) / l->add : ~0ULL;
	return 0;
}

#endif /* PD_BUCKET_H */

/* pd_sha2.h: HMAC-SHA-256/384/512 inside a BPF program (JWT HS256/HS384/HS512), from
 * midstates the controller precomputed (chain/hmac.hpp), and a constant-time compare.
 *
 * One bpf_loop iteration compresses one block: the inner hash's message blocks, then the
 * outer hash's single block. All working state lives in struct pd_sha2, which the caller
 * places in a map value: the verifier sees it as opaque memory, so each block callback is
 * verified once instead of being explored value by value, and the 80-word message schedule
 * stays off the 512-byte stack. Rounds are fully unrolled (round constants become
 * immediates); message words are read 8 bytes at a time. */
#ifndef PD_SHA2_H
#define PD_SHA2_H

#include "pd_common.h"

struct pd_sha2 {
	__u64 h[8];      /* chaining state (SHA-256: the low 32 bits) */
	__u64 outer[8];  /* the outer midstate, taken up by the last block */
	union {          /* message schedule */
		__u64 w[80];      /* SHA-384/512 */
		__u32 w32[64];    /* SHA-256 */
	};
	__u8 mac[64];    /* result: the HMAC, big-endian; 32, 48 or 64 bytes, the rest 0 */
	__u32 off;       /* the message is buf[off .. off + len) */
	__u32 len;
	__u32 alg;       /* 256, 384 or 512 */
	__u32 nblocks;   /* blocks of the inner hash's padded message */
	__u64 bitlen;    /* bits the inner hash has taken in: the key block and the message */
};

struct pd_sha2_cb {      /* bpf_loop context (on the caller's stack): both point into map values */
	struct pd_sha2 *s;
	const __u8 *buf;
};

/* Between unrolled rounds: without it clang keeps every schedule word it stored in a
 * register for the round that reads it, and the spills exceed the 512-byte stack
 * ("Looks like the BPF stack limit of 512 bytes is exceeded"). */
PD_INLINE void pd_sha2_barrier(void)
{
	asm volatile("" ::: "memory");
}

PD_INLINE __u32 pd_sha2_mac_len(__u32 alg)
{
	return alg == 256 ? 32 : alg == 384 ? 48 : alg == 512 ? 64 : 0;
}

/* Big-endian word of 8 bytes of the message at buf[off + p]. buf is a map value of at least
 * PD_HEAD_MAX + PD_HEAD_SLACK bytes, so the masked 8-byte read stays inside it. Map values
 * may be read unaligned (the verifier checks alignment strictly only for the stack and on
 * architectures without efficient unaligned access). */
PD_INLINE __u64 pd_sha2_load(const struct pd_sha2 *s, const __u8 *buf, __u32 p)
{
	return bpf_be64_to_cpu(*(const __u64 *)&buf[PD_HEAD_IDX(s->off + p)]);
}

/* The 8 bytes at p of the padded message: message bytes, then 0x80, then zeros (the length
 * is added by the caller into the block's last word). A word the message ends in is loaded
 * whole (still inside buf) and the bytes past the message masked off. */
PD_INLINE __u64 pd_sha2_word(const struct pd_sha2 *s, const __u8 *buf, __u32 p)
{
	__u32 len = s->len;
	if (p + 8 <= len)
		return pd_sha2_load(s, buf, p);
	if (p > len)
		return 0;
	__u32 n = len - p; /* 0..7 message bytes in this word */
	__u64 v = 0;
	if (n)
		v = pd_sha2_load(s, buf, p) & (~0ULL << (64 - 8 * n));
	return v | (0x80ULL << (56 - 8 * n));
}

/* ---- SHA-256 ---------------------------------------------------------------------------- */
static const __u32 pd_sha256_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* BPF has no rotate. With x in both halves of a 64-bit word, a 32-bit rotate right by n
 * is the low half of one shift, and the three rotates of a SHA-256 sigma share one
 * (rotations by 2, 13, 22 = 2 + (0, 11, 20)): ~10 instructions instead of ~17. */
PD_INLINE __u64 pd_dup32(__u32 x)
{
	return ((__u64)x << 32) | x;
}

PD_INLINE __u32 pd_sha256_S0(__u32 a)
{
	__u64 x = pd_dup32(a);
	return (__u32)((x ^ (x >> 11) ^ (x >> 20)) >> 2);
}

PD_INLINE __u32 pd_sha256_S1(__u32 e)
{
	__u64 x = pd_dup32(e);
	return (__u32)((x ^ (x >> 5) ^ (x >> 19)) >> 6);
}

PD_INLINE __u32 pd_sha256_s0(__u32 w)
{
	__u64 x = pd_dup32(w);
	return (__u32)((x ^ (x >> 11)) >> 7) ^ (w >> 3);
}

PD_INLINE __u32 pd_sha256_s1(__u32 w)
{
	__u64 x = pd_dup32(w);
	return (__u32)((x ^ (x >> 2)) >> 17) ^ (w >> 10);
}

/* w32[0..15] from inner message block i */
PD_INLINE void pd_sha256_fill(struct pd_sha2 *s, const __u8 *buf, __u32 i)
{
	__u32 base = i * 64;
	if (base + 64 <= s->len) { /* a whole block of message: no padding to look for */
#pragma clang loop unroll(full)
		for (__u32 j = 0; j < 8; j++) {
			__u64 v = pd_sha2_load(s, buf, base + 8 * j);
			s->w32[2 * j] = v >> 32;
			s->w32[2 * j + 1] = (__u32)v;
		}
		return;
	}
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++) {
		__u64 v = pd_sha2_word(s, buf, base + 8 * j);
		s->w32[2 * j] = v >> 32;
		s->w32[2 * j + 1] = (__u32)v;
	}
	if (i + 1 == s->nblocks) {
		s->w32[14] = s->bitlen >> 32;
		s->w32[15] = (__u32)s->bitlen;
	}
}

/* w32[0..15] of the outer hash's one block: the inner digest, padded; then h = outer midstate */
PD_INLINE void pd_sha256_outer(struct pd_sha2 *s)
{
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++) {
		s->w32[j] = (__u32)s->h[j];
		s->w32[8 + j] = 0;
		s->h[j] = s->outer[j];
	}
	s->w32[8] = 0x80000000;
	s->w32[15] = (64 + 32) * 8;
}

PD_INLINE void pd_sha256_compress(struct pd_sha2 *s)
{
	__u32 *w = s->w32;
#pragma clang loop unroll(full)
	for (__u32 t = 16; t < 64; t++) {
		w[t] = w[t - 16] + pd_sha256_s0(w[t - 15]) + w[t - 7] + pd_sha256_s1(w[t - 2]);
		pd_sha2_barrier();
	}
	__u32 a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	__u32 e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
#pragma clang loop unroll(full)
	for (__u32 t = 0; t < 64; t++) {
		__u32 t1 = h + pd_sha256_S1(e) + (g ^ (e & (f ^ g))) + pd_sha256_k[t] + w[t];
		__u32 t2 = pd_sha256_S0(a) + ((a & b) | (c & (a | b)));
		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
		pd_sha2_barrier();
	}
	__u32 v[8] = { a, b, c, d, e, f, g, h };
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++)
		s->h[j] = (__u32)(s->h[j] + v[j]);
}

static long pd_sha256_block(__u32 i, struct pd_sha2_cb *cb)
{
	struct pd_sha2 *s = cb->s;
	if (i < s->nblocks)
		pd_sha256_fill(s, cb->buf, i);
	else
		pd_sha256_outer(s);
	pd_sha256_compress(s);
	return 0;
}

/* ---- SHA-384 / SHA-512 ------------------------------------------------------------------ */
static const __u64 pd_sha512_k[80] = {
	0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
	0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
	0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
	0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
	0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
	0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
	0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
	0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
	0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
	0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
	0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
	0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
	0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
	0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
	0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
	0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
	0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
	0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
	0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
	0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL,
};

PD_INLINE __u64 pd_ror64(__u64 x, __u32 n)
{
	return (x >> n) | (x << (64 - n));
}

/* w[0..15] from inner message block i */
PD_INLINE void pd_sha512_fill(struct pd_sha2 *s, const __u8 *buf, __u32 i)
{
	__u32 base = i * 128;
	if (base + 128 <= s->len) {
#pragma clang loop unroll(full)
		for (__u32 j = 0; j < 16; j++)
			s->w[j] = pd_sha2_load(s, buf, base + 8 * j);
		return;
	}
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 16; j++)
		s->w[j] = pd_sha2_word(s, buf, base + 8 * j);
	if (i + 1 == s->nblocks)
		s->w[15] = s->bitlen; /* w[14], the high half of the 128-bit length, is 0 */
}

/* w[0..15] of the outer block: the inner digest (48 or 64 bytes), padded; then h = outer */
PD_INLINE void pd_sha512_outer(struct pd_sha2 *s)
{
	__u32 n = s->alg == 384 ? 6 : 8;
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++) {
		s->w[j] = j < n ? s->h[j] : 0;
		s->w[8 + j] = 0;
		s->h[j] = s->outer[j];
	}
	s->w[n] = 0x8000000000000000ULL;
	s->w[15] = (128 + n * 8) * 8;
}

PD_INLINE void pd_sha512_compress(struct pd_sha2 *s)
{
	__u64 *w = s->w;
#pragma clang loop unroll(full)
	for (__u32 t = 16; t < 80; t++) {
		__u64 x = w[t - 15], y = w[t - 2];
		w[t] = w[t - 16] + (pd_ror64(x, 1) ^ pd_ror64(x, 8) ^ (x >> 7)) + w[t - 7] +
		       (pd_ror64(y, 19) ^ pd_ror64(y, 61) ^ (y >> 6));
		pd_sha2_barrier();
	}
	__u64 a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
	__u64 e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
#pragma clang loop unroll(full)
	for (__u32 t = 0; t < 80; t++) {
		__u64 t1 = h + (pd_ror64(e, 14) ^ pd_ror64(e, 18) ^ pd_ror64(e, 41)) + (g ^ (e & (f ^ g))) +
			   pd_sha512_k[t] + w[t];
		__u64 t2 = (pd_ror64(a, 28) ^ pd_ror64(a, 34) ^ pd_ror64(a, 39)) + ((a & b) | (c & (a | b)));
		/* the same renaming as SHA-256's rounds: kept apart, not shared through arrays,
		 * which clang 14 compiles into 10-20% slower code */
		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
		pd_sha2_barrier();
	}
	__u64 v[8] = { a, b, c, d, e, f, g, h };
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++)
		s->h[j] += v[j];
}

static long pd_sha512_block(__u32 i, struct pd_sha2_cb *cb)
{
	struct pd_sha2 *s = cb->s;
	if (i < s->nblocks)
		pd_sha512_fill(s, cb->buf, i);
	else
		pd_sha512_outer(s);
	pd_sha512_compress(s);
	return 0;
}

/* ---- HMAC ------------------------------------------------------------------------------- */
/* HMAC of buf[off .. off + len) from precomputed midstates: inner is the chaining state after
 * compressing the one block K' ^ ipad, outer after K' ^ opad (chain/hmac.hpp), 8 words each
 * (SHA-256: values < 2^32; SHA-384: SHA-512 compression from its own midstates). alg: 256,
 * 384 or 512. s: in a map value (see the top of this file). buf: a map value of at least
 * PD_HEAD_MAX + PD_HEAD_SLACK bytes; off + len <= PD_HEAD_MAX, len <= PD_JWT_MAX.
 * Returns 0 with the HMAC in s->mac, or -1 on bad arguments. */
PD_INLINE int pd_hmac_sha2(struct pd_sha2 *s, const __u8 *buf, __u32 off, __u32 len, __u32 alg,
			   const __u64 inner[8], const __u64 outer[8])
{
	if ((alg != 256 && alg != 384 && alg != 512) || len > PD_JWT_MAX || off > PD_HEAD_MAX - len)
		return -1;
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++) {
		s->h[j] = inner[j];
		s->outer[j] = outer[j];
	}
	/* The key block is already in the midstate, but the length field counts it. Padding
	 * adds 0x80 and a 64-bit (SHA-256) or 128-bit (SHA-384/512) length. */
	__u32 bsize = alg == 256 ? 64 : 128;
	__u32 nblocks = alg == 256 ? (len + 9 + 63) / 64 : (len + 17 + 127) / 128;
	s->off = off;
	s->len = len;
	s->alg = alg;
	s->nblocks = nblocks;
	s->bitlen = (__u64)(bsize + len) * 8;

	struct pd_sha2_cb cb = { .s = s, .buf = buf };
	long done;
	if (alg == 256)
		done = bpf_loop(nblocks + 1, pd_sha256_block, &cb, 0);
	else
		done = bpf_loop(nblocks + 1, pd_sha512_block, &cb, 0);
	if (done != nblocks + 1)
		return -1;

#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 8; j++) {
		if (alg == 256) {
			*(__u32 *)&s->mac[4 * j] = bpf_htonl((__u32)s->h[j]);
			*(__u32 *)&s->mac[32 + 4 * j] = 0;
		} else {
			*(__u64 *)&s->mac[8 * j] = j < 6 || alg == 512 ? bpf_cpu_to_be64(s->h[j]) : 0;
		}
	}
	return 0;
}

/* 1 if s->mac equals want[0 .. n), n the MAC length of s->alg (32, 48 or 64), else 0; in
 * time that depends only on n. want is read 8 bytes at a time, 64 bytes at most: a map
 * value (any alignment) or 8-byte-aligned stack. */
PD_INLINE int pd_sha2_equal(const struct pd_sha2 *s, const __u8 *want, __u32 n)
{
	__u64 diff = 0;
#pragma clang loop unroll(full)
	for (__u32 j = 0; j < 64; j += 8)
		if (j < n)
			diff |= *(const __u64 *)&s->mac[j] ^ *(const __u64 *)&want[j];
	return n != 0 && n == pd_sha2_mac_len(s->alg) && diff == 0;
}

#endif /* PD_SHA2_H */

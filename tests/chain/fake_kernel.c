/* fake_kernel.c: a kernel that lacks a feature, as policyd's start check sees it. Preloaded
 * (LD_PRELOAD) into the real policyd binary by tests/chain/kernel_probe_tests.cpp only, it
 * stands in front of libbpf for the features named in PD_FAKE_KERNEL_LACKS (comma-separated)
 * and hands every other call to the real libbpf:
 *   bpf_loop     libbpf_probe_bpf_helper(..., BPF_FUNC_loop) answers 0, as on Linux < 5.17
 *   vmlinux_btf  btf__load_vmlinux_btf() finds nothing, as on a kernel built without
 *                CONFIG_DEBUG_INFO_BTF
 * Nothing in policyd knows of it: the production path has no test hook. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

static int lacks(const char *feature)
{
	const char *list = getenv("PD_FAKE_KERNEL_LACKS");
	size_t n = strlen(feature);
	while (list && *list) {
		const char *end = strchr(list, ',');
		size_t len = end ? (size_t)(end - list) : strlen(list);
		if (len == n && strncmp(list, feature, n) == 0)
			return 1;
		list = end ? end + 1 : NULL;
	}
	return 0;
}

int libbpf_probe_bpf_helper(enum bpf_prog_type prog_type, enum bpf_func_id helper_id, const void *opts)
{
	int (*real)(enum bpf_prog_type, enum bpf_func_id, const void *);
	if (helper_id == BPF_FUNC_loop && lacks("bpf_loop"))
		return 0;
	*(void **)&real = dlsym(RTLD_NEXT, "libbpf_probe_bpf_helper");
	return real ? real(prog_type, helper_id, opts) : -ENOSYS;
}

struct btf *btf__load_vmlinux_btf(void)
{
	struct btf *(*real)(void);
	if (lacks("vmlinux_btf")) {
		errno = ESRCH; /* what libbpf answers when no location holds the kernel's BTF */
		return NULL;
	}
	*(void **)&real = dlsym(RTLD_NEXT, "btf__load_vmlinux_btf");
	if (!real) {
		errno = ENOSYS;
		return NULL;
	}
	return real();
}

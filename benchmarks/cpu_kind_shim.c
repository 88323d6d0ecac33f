/* Make an x86-64 Linux process see an older CPU kind: an LD_PRELOAD library that hides
 * instruction-set extensions from the CPUID instruction and from /proc/cpuinfo.
 *
 * Built and used by benchmarks/cpu_kind.py (read its docstring first). CPUID_KIND picks:
 *   no-vnni  AVX-512 kept; AVX-512 VNNI, AVX-VNNI, AVX-512 BF16 and AMX hidden (Skylake-SP)
 *   avx2     every AVX-512 extension hidden as well (AVX2 + FMA: Haswell/Broadwell, Zen 1-3)
 *
 * How: arch_prctl(ARCH_SET_CPUID, 0) turns on the kernel's CPUID faulting (the cpuid_fault
 * flag), so each CPUID raises SIGSEGV; the handler runs the real CPUID with faulting briefly
 * off, clears the hidden bits, writes the registers and steps over the 2-byte instruction.
 * Faulting is inherited by threads and forks and reset by execve; the library is loaded again
 * there through LD_PRELOAD. SIGSEGV handlers that the program installs later (sigaction or
 * signal) are kept as the next handler in line, for faults that are not CPUID. glibc's own string functions are
 * chosen before this library loads and keep the full set: the runtime's kernels are what
 * this is for.
 */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

enum { KIND_NONE, KIND_NO_VNNI, KIND_AVX2 };
static int kind = KIND_NONE;
static struct sigaction next_segv; /* the program's own SIGSEGV handler, if any */
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

#define BIT(n) (1u << (n))

static void hide(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c,
                 unsigned *d) {
    (void)b;
    if (leaf == 7 && sub == 0) {
        *c &= ~BIT(11);                         /* AVX512_VNNI */
        *d &= ~(BIT(22) | BIT(24) | BIT(25));   /* AMX_BF16, AMX_TILE, AMX_INT8 */
        if (kind == KIND_AVX2) {
            /* AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
            *b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) |
                    BIT(31));
            /* VBMI, VBMI2, BITALG, VPOPCNTDQ */
            *c &= ~(BIT(1) | BIT(6) | BIT(12) | BIT(14));
            /* 4VNNIW, 4FMAPS, VP2INTERSECT, FP16 */
            *d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(23));
        }
    } else if (leaf == 7 && sub == 1) {
        *a &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23)); /* AVX_VNNI, AVX512_BF16, AMX_FP16, AVX_IFMA */
        *d &= ~(BIT(4) | BIT(5) | BIT(10));           /* AVX_VNNI_INT8, AVX_NE_CONVERT, VNNI_INT16 */
    }
}

static long set_cpuid_faulting(int on) {
    return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1);
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    /* CPUID faulting raises a general-protection fault (SI_KERNEL); page faults and raise()
     * have other codes, and their address may not be readable */
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {
        unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
        int saved = errno;
        set_cpuid_faulting(0);
        __cpuid_count(leaf, sub, a, b, c, d);
        set_cpuid_faulting(1);
        errno = saved;
        hide(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a;
        r[REG_RBX] = b;
        r[REG_RCX] = c;
        r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    if (next_segv.sa_flags & SA_SIGINFO) {
        next_segv.sa_sigaction(sig, info, context);
    } else if (next_segv.sa_handler != SIG_DFL && next_segv.sa_handler != SIG_IGN) {
        next_segv.sa_handler(sig);
    } else {
        struct sigaction fallback;
        memset(&fallback, 0, sizeof fallback);
        fallback.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &fallback, NULL); /* the fault repeats on return: the end */
    }
}

/* Keep our handler installed; what the program asks for becomes the next in line. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    if (sig != SIGSEGV || kind == KIND_NONE) return real_sigaction(sig, act, old);
    if (old) *old = next_segv;
    if (act) next_segv = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
}

static const char *const hidden_flags[] = {
    "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8",
    "amx_fp16", "avx_vnni_int8", "avx_ne_convert", "avx_vnni_int16", "avx_ifma", NULL};

static int flag_hidden(const char *flag, size_t n) {
    if (kind == KIND_AVX2 && n >= 6 && strncmp(flag, "avx512", 6) == 0) return 1;
    for (const char *const *h = hidden_flags; *h; h++)
        if (strlen(*h) == n && strncmp(*h, flag, n) == 0) return 1;
    return 0;
}

/* /proc/cpuinfo with the hidden flags taken out of every "flags" line, as a memfd. */
static int masked_cpuinfo(int (*real_open)(const char *, int, ...)) {
    int in = real_open("/proc/cpuinfo", O_RDONLY | O_CLOEXEC);
    if (in < 0) return in;
    FILE *src = fdopen(in, "r");
    int out = memfd_create("cpuinfo", MFD_CLOEXEC);
    FILE *dst = out >= 0 ? fdopen(dup(out), "w") : NULL;
    if (!src || !dst) {
        if (src) fclose(src);
        if (out >= 0) close(out);
        errno = EIO;
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, src) > 0) {
        if (strncmp(line, "flags", 5) != 0) {
            fputs(line, dst);
            continue;
        }
        char *colon = strchr(line, ':');
        if (!colon) {
            fputs(line, dst);
            continue;
        }
        fwrite(line, 1, (size_t)(colon - line + 1), dst);
        for (char *p = colon + 1; *p;) {
            size_t space = strspn(p, " \t\n"), word;
            p += space;
            word = strcspn(p, " \t\n");
            if (word && !flag_hidden(p, word)) fprintf(dst, " %.*s", (int)word, p);
            p += word;
        }
        fputc('\n', dst);
    }
    free(line);
    fclose(src);
    fclose(dst);
    lseek(out, 0, SEEK_SET);
    return out;
}

static int is_cpuinfo(const char *path) {
    return kind != KIND_NONE && path && strcmp(path, "/proc/cpuinfo") == 0;
}

#define OPEN_WRAPPER(name)                                                     \
    int name(const char *path, int flags, ...) {                               \
        static int (*real)(const char *, int, ...);                            \
        if (!real) real = dlsym(RTLD_NEXT, #name);                             \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0; \
        va_end(ap);                                                            \
        if (is_cpuinfo(path)) return masked_cpuinfo(real);                     \
        return real(path, flags, mode);                                        \
    }
OPEN_WRAPPER(open)
OPEN_WRAPPER(open64)

#define OPENAT_WRAPPER(name)                                                   \
    int name(int dirfd, const char *path, int flags, ...) {                    \
        static int (*real)(int, const char *, int, ...);                       \
        static int (*real_open)(const char *, int, ...);                       \
        if (!real) real = dlsym(RTLD_NEXT, #name);                             \
        if (!real_open) real_open = dlsym(RTLD_NEXT, "open");                  \
        va_list ap;                                                            \
        va_start(ap, flags);                                                   \
        mode_t mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, mode_t) : 0; \
        va_end(ap);                                                            \
        if (is_cpuinfo(path)) return masked_cpuinfo(real_open);                \
        return real(dirfd, path, flags, mode);                                 \
    }
OPENAT_WRAPPER(openat)
OPENAT_WRAPPER(openat64)

__attribute__((constructor)) static void start(void) {
    const char *want = getenv("CPUID_KIND");
    if (!want) return;
    int k = strcmp(want, "no-vnni") == 0 ? KIND_NO_VNNI : strcmp(want, "avx2") == 0 ? KIND_AVX2 : -1;
    if (k < 0) {
        fprintf(stderr, "cpu_kind_shim: CPUID_KIND=%s is not no-vnni or avx2\n", want);
        _exit(2);
    }
    if (!real_sigaction) real_sigaction = dlsym(RTLD_NEXT, "sigaction");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid_faulting(1) != 0) {
        fprintf(stderr, "cpu_kind_shim: this kernel or CPU has no CPUID faulting (%s)\n",
                strerror(errno));
        _exit(2);
    }
    kind = k;
}

/*
 * isa.c - which kernel set (kernels.h) gptc runs.
 *
 * The widest set that both this build and this CPU support is chosen on
 * first use; GPTC_ISA=<a table's name> forces one (a name the CPU
 * cannot run is ignored, never obeyed: gptc._C.isa() says what runs), and
 * gptc_set_isa switches at run time. Every operation reads the selected
 * table once when it starts, so a switch takes effect from the next one.
 */
#include "gptc.h"
#include "internal.h"
#include "kernels.h"

#ifdef GPTC_HAVE_X86_KERNELS
#include <cpuid.h>
#endif
#if defined(GPTC_HAVE_NEON_KERNELS) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)   /* arm64's <asm/hwcap.h>, for C libraries older than it */
#endif
#elif defined(GPTC_HAVE_NEON_KERNELS) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

const gptc_kernels *const gptc_kernels_compiled[] = {
    &gptc_kernels_generic,
#ifdef GPTC_HAVE_X86_KERNELS
    &gptc_kernels_avx2,
    &gptc_kernels_avx2_vnni,
    &gptc_kernels_avx512,
    &gptc_kernels_avx512_vnni,
#endif
#ifdef GPTC_HAVE_NEON_KERNELS
    &gptc_kernels_neon,
    &gptc_kernels_neon_dotprod,
#endif
    NULL,
};

#ifdef GPTC_HAVE_X86_KERNELS
/* AVX-VNNI (the VEX form of vpdpbusd): CPUID leaf 7, subleaf 1, EAX bit 4.
 * Asked directly because older compilers (clang 14) have no name for it in
 * __builtin_cpu_supports; its registers are AVX2's, whose OS support the
 * avx2 bit already covers. */
static int cpu_has_avx_vnni(void)
{
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 4) & 1u);
}
#endif

#ifdef GPTC_HAVE_NEON_KERNELS
/* The dot-product instructions (sdot; FEAT_DotProd, optional from ARMv8.2),
 * as the operating system reports them; off where it says nothing. */
static int cpu_has_dotprod(void)
{
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int has = 0;
    size_t size = sizeof(has);
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &has, &size, NULL, 0) == 0 && has != 0;
#else
    return 0;
#endif
}
#endif

/* Whether this CPU runs the kernels of table t. */
static int cpu_runs(const gptc_kernels *t)
{
#ifdef GPTC_HAVE_X86_KERNELS
    /* libgcc's (and compiler-rt's) feature bits include the OS check
     * (XGETBV) that the registers are saved across context switches */
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    /* BW for the int8 kernels: every AVX-512 CPU but Xeon Phi has it */
    int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
    if (t == &gptc_kernels_avx2) return avx2;
    if (t == &gptc_kernels_avx2_vnni) return avx2 && cpu_has_avx_vnni();
    if (t == &gptc_kernels_avx512) return avx512;
    /* its int8 products are vpdpbusd on 256-bit vectors, which needs AVX512-VL too */
    if (t == &gptc_kernels_avx512_vnni)
        return avx512 && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
#endif
#ifdef GPTC_HAVE_NEON_KERNELS
    if (t == &gptc_kernels_neon_dotprod) return cpu_has_dotprod();
#endif
    /* generic runs anywhere; NEON is part of every ARMv8-A CPU */
    return 1;
}

static const gptc_kernels *find(const char *name)
{
    for (int i = 0; gptc_kernels_compiled[i] != NULL; i++) {
        const gptc_kernels *t = gptc_kernels_compiled[i];
        if (strcmp(t->name, name) == 0 && cpu_runs(t)) return t;
    }
    return NULL;
}

static const gptc_kernels *choose(void)
{
    const char *forced = getenv("GPTC_ISA");
    const gptc_kernels *t = forced != NULL ? find(forced) : NULL;
    if (t != NULL) return t;
    for (int i = 0; gptc_kernels_compiled[i] != NULL; i++) {
        if (cpu_runs(gptc_kernels_compiled[i])) t = gptc_kernels_compiled[i];
    }
    return t;   /* the widest: the list is narrowest first */
}

static _Atomic(const gptc_kernels *) active;   /* NULL until first use */

const gptc_kernels *gptc_active_kernels(void)
{
    /* Racing first calls both store what choose() returns, the same table. */
    const gptc_kernels *t = atomic_load(&active);
    if (t == NULL) {
        t = choose();
        atomic_store(&active, t);
    }
    return t;
}

const char *gptc_isa_name(void)
{
    return gptc_active_kernels()->name;
}

int gptc_set_isa(const char *name)
{
    const gptc_kernels *t = find(name);
    if (t == NULL) return -1;
    atomic_store(&active, t);
    return 0;
}

int gptc_supported_isas(const char **names, int capacity)
{
    int n = 0;
    for (int i = 0; gptc_kernels_compiled[i] != NULL; i++) {
        if (!cpu_runs(gptc_kernels_compiled[i])) continue;
        if (n < capacity) names[n] = gptc_kernels_compiled[i]->name;
        n++;
    }
    return n;
}

int gptc_compiled_isas(const char **names, int capacity)
{
    int n = 0;
    for (int i = 0; gptc_kernels_compiled[i] != NULL; i++, n++) {
        if (n < capacity) names[n] = gptc_kernels_compiled[i]->name;
    }
    return n;
}

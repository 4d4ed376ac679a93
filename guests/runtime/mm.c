/*
 * mm.c - pseudo-physical memory helpers of the pyxen mini-OS.
 *
 * Initial layout (libxc x86_64 PV builder; see guests/README.md): starting
 * at VIRT_BASE (= pfn 0) the bootstrap region holds the kernel image, an
 * optional ramdisk, the p2m array, start_info, the xenstore page, the
 * console page, the bootstrap page tables (mapped read-only) and one boot
 * stack page, followed by at least 512 KiB of mapped padding; the region
 * ends on a 4 MiB boundary.  Virtual = VIRT_BASE + pfn * 4096 throughout.
 * Frames past the region (up to nr_pages) are ours but unmapped.
 */
#include "minios.h"

unsigned long *p2m;
unsigned long nr_pages;
unsigned long first_free_pfn;
unsigned long mapped_end_pfn;

static bool layout_done, mm_done;
static unsigned long next_free_pfn, next_unmapped_pfn;
static unsigned long cur_l4_mfn;

void mm_early_init(void)
{
    p2m = (unsigned long *)start_info->mfn_list;
    nr_pages = start_info->nr_pages;
}

/* ---- mfn -> pfn: search the p2m (no dependency on the M2P) ---- */
static struct { unsigned long mfn, pfn_plus1; } m2p_cache[32];
static unsigned long hint_mfn, hint_pfn;

static unsigned long remember(unsigned long mfn, unsigned long pfn)
{
    m2p_cache[mfn % ARRAY_SIZE(m2p_cache)].mfn = mfn;
    m2p_cache[mfn % ARRAY_SIZE(m2p_cache)].pfn_plus1 = pfn + 1;
    hint_mfn = mfn;
    hint_pfn = pfn;
    return pfn;
}

unsigned long mfn_to_pfn(unsigned long mfn)
{
    unsigned long pfn, slot = mfn % ARRAY_SIZE(m2p_cache);

    if (mfn == ~0UL)
        return ~0UL;
    if (m2p_cache[slot].pfn_plus1 && m2p_cache[slot].mfn == mfn) {
        pfn = m2p_cache[slot].pfn_plus1 - 1;
        if (pfn < nr_pages && p2m[pfn] == mfn)
            return pfn;
    }
    /* Frames are usually handed out in runs: try the neighbour of the last hit. */
    pfn = hint_pfn + (mfn - hint_mfn);
    if (pfn < nr_pages && p2m[pfn] == mfn)
        return remember(mfn, pfn);
    for (pfn = 0; pfn < nr_pages; pfn++)
        if (p2m[pfn] == mfn)
            return remember(mfn, pfn);
    return ~0UL;
}

static unsigned long pfn_up(unsigned long va)
{
    return (va - VIRT_BASE + PAGE_SIZE - 1) >> PAGE_SHIFT;
}

/* First pfn after every bootstrap element we know about. */
static void mm_layout(void)
{
    unsigned long end = 0, v;

    if (layout_done)
        return;
#define NOTE(x) do { v = (x); if (v > end) end = v; } while (0)
    NOTE(pfn_up((unsigned long)_end));
    NOTE(virt_to_pfn(start_info) + 1);
    NOTE(pfn_up(start_info->mfn_list + nr_pages * sizeof(unsigned long)));
    NOTE(virt_to_pfn((void *)start_info->pt_base) + start_info->nr_pt_frames);
    NOTE(pfn_up(boot_rsp));  /* boot stack page ends at the initial %rsp */
    if (start_info->mod_len) {
        if (start_info->flags & SIF_MOD_START_PFN)
            NOTE(start_info->mod_start +
                 ((start_info->mod_len + PAGE_SIZE - 1) >> PAGE_SHIFT));
        else
            NOTE(pfn_up(start_info->mod_start + start_info->mod_len));
    }
    if (start_info->console.domU.mfn && mfn_to_pfn(start_info->console.domU.mfn) != ~0UL)
        NOTE(mfn_to_pfn(start_info->console.domU.mfn) + 1);
    if (start_info->store_mfn && mfn_to_pfn(start_info->store_mfn) != ~0UL)
        NOTE(mfn_to_pfn(start_info->store_mfn) + 1);
#undef NOTE
    first_free_pfn = end;
    mapped_end_pfn = end;    /* extended by mm_init() */
    cur_l4_mfn = virt_to_mfn((void *)start_info->pt_base);
    layout_done = true;
}

void *mfn_to_virt(unsigned long mfn)
{
    mm_layout();
    unsigned long pfn = mfn_to_pfn(mfn);
    if (pfn == ~0UL || pfn >= mapped_end_pfn)
        return NULL;
    return pfn_to_virt(pfn);
}

unsigned long current_l4_mfn(void)
{
    mm_layout();
    return cur_l4_mfn;
}

void set_current_l4_mfn(unsigned long mfn)
{
    mm_layout();
    cur_l4_mfn = mfn;
}

int pt_walk(unsigned long l4_mfn, unsigned long va, struct pt_walk *w)
{
    unsigned long mfn = l4_mfn;

    memset(w, 0, sizeof(*w));
    for (int level = 4; level >= 1; level--) {
        unsigned int idx = (va >> (PAGE_SHIFT + 9 * (level - 1))) & (PT_ENTRIES - 1);
        const volatile uint64_t *table = mfn_to_virt(mfn);
        if (!table)
            return -1;
        uint64_t e = table[idx];
        w->table_mfn[level] = mfn;
        w->entry[level] = e;
        w->entry_maddr[level] = (mfn << PAGE_SHIFT) + idx * sizeof(uint64_t);
        if (!(e & _PAGE_PRESENT)) {
            w->level = level;
            return level;
        }
        if (level > 1 && level < 4 && (e & _PAGE_PSE))
            return -2;   /* superpage: not used by PV guests */
        mfn = (e & PTE_ADDR_MASK) >> PAGE_SHIFT;
    }
    w->level = 0;
    return 0;
}

int mm_init(void)
{
    struct pt_walk w;

    if (mm_done)
        return 0;
    mm_layout();
    if (first_free_pfn >= nr_pages)
        return -1;
    /* Extend over the mapped padding that follows the bootstrap elements. */
    unsigned long pfn = first_free_pfn;
    while (pfn < nr_pages) {
        if (pt_walk(cur_l4_mfn, (unsigned long)pfn_to_virt(pfn), &w) != 0)
            break;
        if (((w.entry[1] & PTE_ADDR_MASK) >> PAGE_SHIFT) != p2m[pfn] ||
            !(w.entry[1] & _PAGE_RW))
            break;
        pfn++;
    }
    mapped_end_pfn = pfn;
    next_free_pfn = first_free_pfn;
    next_unmapped_pfn = nr_pages;
    mm_done = true;
    return 0;
}

unsigned long alloc_pfn(void)
{
    if (mm_init())
        return 0;
    while (next_free_pfn < mapped_end_pfn) {
        unsigned long pfn = next_free_pfn++;
        if (p2m[pfn] == ~0UL)
            continue;
        memset(pfn_to_virt(pfn), 0, PAGE_SIZE);
        return pfn;
    }
    return 0;
}

unsigned long alloc_unmapped_pfn(void)
{
    if (mm_init())
        return 0;
    while (next_unmapped_pfn > mapped_end_pfn) {
        unsigned long pfn = --next_unmapped_pfn;
        if (p2m[pfn] != ~0UL)
            return pfn;
    }
    return 0;
}

int remap_page(void *va, unsigned long mfn, uint64_t flags)
{
    return (int)HYPERVISOR_update_va_mapping((unsigned long)va,
                                             (mfn << PAGE_SHIFT) | flags,
                                             UVMF_INVLPG | UVMF_LOCAL);
}

int make_page_readonly(void *va)
{
    return remap_page(va, virt_to_mfn(va), PTE_KERN_RO);
}

int make_page_writable(void *va)
{
    return remap_page(va, virt_to_mfn(va), PTE_KERN_RW);
}

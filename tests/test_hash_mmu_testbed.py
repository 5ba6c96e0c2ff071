# SPDX-License-Identifier: GPL-2.0-or-later
"""End-to-end tests of lpdebug.hash_mmu on the real-kernel testbed.

* ``settled`` (radix): the walker, fed the radix geometry from the runtime
  variables, reads every module region byte for byte as drgn's own radix
  translation does (a check of the entry format on real tables).
* ``settled-hash`` (6.12, 4K pages, ``disable_radix``), ``settled-64k-hash``
  (6.12, 64K pages) and ``settled-6.1-hash`` (6.1, 4K pages, no
  ``NUMBER(RADIX_MMU)`` in vmcoreinfo), each the hash-MMU twin of the radix
  scenario without the suffix: with the segments, drgn finds the loaded
  modules, module text and read-only data equal the .ko's bytes (apart from
  relocated words), the livepatch objects give the same facts as on the radix
  run of the same scenario and as /sys/kernel/livepatch, and an unmapped page
  gives a FaultError naming its address.

They fail (never skip) when the testbed or a scenario is missing.
"""

import os
import struct

import drgn
import pytest
from drgn import FaultError
from drgn.helpers.linux.list import list_for_each_entry
from drgn.helpers.linux.mm import PageReserved, for_each_vmap_area
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection

from lpdebug import hash_mmu, kernel
from testbed import scenario, truth

pytestmark = pytest.mark.testbed

# (hash scenario, radix scenario of the same kernel and guest, geometry the
# kernel's compile-time H_ values give)
HASH_SCENARIOS = [
    pytest.param("settled-hash", "settled", hash_mmu.HASH_4K, id="settled-hash"),
    pytest.param("settled-64k-hash", "settled-64k", hash_mmu.HASH_64K, id="settled-64k-hash"),
    # 6.1: no NUMBER(RADIX_MMU) in vmcoreinfo, the MMU comes from cur_cpu_spec
    pytest.param("settled-6.1-hash", "settled-6.1", hash_mmu.HASH_4K, id="settled-6.1-hash"),
]

_progs = {}


def open_scenario(name):
    """vmcore + vmlinux, then the hash segments, then the modules' debug info:
    drgn finds loaded modules by reading ``struct module``, which lives in
    vmalloc space."""
    if name in _progs:
        return _progs[name]
    s = scenario(name)
    prog = drgn.Program()
    prog.set_core_dump(s["vmcore"])
    prog.load_debug_info([s["vmlinux"]])
    hm = hash_mmu.add_hash_mmu_segments(prog)
    prog.load_debug_info(list(s["modules"]))
    _progs[name] = (prog, hm, s)
    return _progs[name]


def modules(prog):
    return {m.name.string_().decode(): m
            for m in list_for_each_entry("struct module", prog["modules"].address_of_(),
                                         "list")}


def module_areas(mod):
    """(base, size) of each memory area of a module: ``mod->mem[]`` (6.4+),
    else ``core_layout``/``init_layout``/``data_layout``."""
    try:
        mems = list(mod.mem)
    except AttributeError:
        mems = []
        for name in ("core_layout", "init_layout", "data_layout"):
            try:
                mems.append(getattr(mod, name))
            except AttributeError:
                pass
    return [(m.base.value_(), m.size.value_()) for m in mems if m.size.value_()]


def module_sections(mod):
    sa = mod.sect_attrs
    return {sa.attrs[i].battr.attr.name.string_().decode(): sa.attrs[i].address.value_()
            for i in range(sa.nsections.value_())}


def ko_paths(s):
    return {os.path.basename(p)[:-3].replace("-", "_"): p for p in s["modules"]}


def livepatch_facts(prog):
    """What must not depend on the MMU: patches, objects, funcs, states."""
    facts = []
    for p in list_for_each_entry("struct klp_patch", prog["klp_patches"].address_of_(),
                                 "list"):
        objs = []
        for o in list_for_each_entry("struct klp_object", p.obj_list.address_of_(), "node"):
            funcs = []
            for f in list_for_each_entry("struct klp_func", o.func_list.address_of_(), "node"):
                new = f.new_func.value_()
                try:
                    new_name = prog.symbol(new).name
                except LookupError:
                    new_name = None
                funcs.append((f.old_name.string_().decode(), f.old_sympos.value_(),
                              bool(f.patched), bool(f.transition), bool(f.nop), new_name,
                              f.old_size.value_(), f.new_size.value_()))
            objs.append((o.name.string_().decode() if o.name else None, bool(o.patched),
                         bool(o.mod) or not o.name, sorted(funcs)))
        facts.append((p.mod.name.string_().decode(), bool(p.enabled), bool(p.replace),
                      sorted(objs, key=repr)))
    return sorted(facts, key=repr)


def sys_kernel_livepatch(name):
    """{patch: (enabled, {object: [func,sympos ...]})} from the guest's sysfs."""
    root = truth(name, "sys_kernel_livepatch")
    out = {}
    for patch in sorted(os.listdir(root)):
        pdir = os.path.join(root, patch)
        with open(os.path.join(pdir, "enabled")) as f:
            enabled = f.read().strip() == "1"
        objs = {}
        for obj in os.listdir(pdir):
            odir = os.path.join(pdir, obj)
            if os.path.isdir(odir):
                objs[obj] = sorted(d for d in os.listdir(odir)
                                   if os.path.isdir(os.path.join(odir, d)))
        out[patch] = (enabled, objs)
    return out


def relocated_words(elf, section):
    """Offsets (4-byte aligned) in ``section`` that relocations may change."""
    words = set()
    for sec in elf.iter_sections():
        if (isinstance(sec, RelocationSection)
                and sec.name in (".rela" + section, ".rel" + section)):
            for r in sec.iter_relocations():
                o = r["r_offset"]
                words.update(range(o & ~3, o + 8, 4))
    return words


# --- radix: the walker against drgn's own translation -------------------------


def test_radix_walker_matches_drgn():
    prog, hm, s = open_scenario("settled")
    assert hash_mmu.mmu_type(prog) == "radix"
    assert hm is None  # no-op on radix
    walker = hash_mmu.kernel_page_tables(prog)
    assert walker.geometry == hash_mmu.RADIX_4K  # runtime variables of a radix kernel
    checked = 0
    for name, mod in modules(prog).items():
        for base, size in module_areas(mod):
            assert walker.read(base, size) == prog.read(base, size), (name, hex(base))
            checked += size
        for p in list_for_each_entry("struct klp_patch", prog["klp_patches"].address_of_(),
                                     "list"):
            assert walker.read(p.value_(), 64) == prog.read(p.value_(), 64)
    assert checked > 0


def vm_struct_pages_checked(prog, walker):
    """Check the walker against the kernel's own bookkeeping: every page of
    every vmalloc area with ``vm->pages`` (module memory among them) must
    translate to the physical address of its ``struct page``."""
    vmemmap = prog["vmemmap"].value_()
    page_struct = prog.type("struct page").size
    ps = walker.geometry.page_size
    order = "<" if prog.platform.flags & drgn.PlatformFlags.IS_LITTLE_ENDIAN else ">"
    checked = 0
    for va in for_each_vmap_area(prog):
        vm = va.vm
        if not vm or not vm.pages:
            continue
        addr, npages = vm.addr.value_(), vm.nr_pages.value_()
        pages = struct.unpack(order + "%dQ" % npages, prog.read(vm.pages.value_(), 8 * npages))
        for i, page in enumerate(pages):
            want = (page - vmemmap) // page_struct * ps
            assert walker.translate(addr + i * ps)[0] == want, hex(addr + i * ps)
            checked += 1
    return checked


def test_radix_walker_matches_vm_struct_pages():
    prog, hm, s = open_scenario("settled")
    assert vm_struct_pages_checked(prog, hash_mmu.kernel_page_tables(prog)) > 0


# --- hash --------------------------------------------------------------------


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_walker_matches_vm_struct_pages(hash_name, radix_name, geometry):
    prog, hm, s = open_scenario(hash_name)
    assert vm_struct_pages_checked(prog, hm.walker) > 0


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_detected_and_geometry(hash_name, radix_name, geometry):
    prog, hm, s = open_scenario(hash_name)
    assert hash_mmu.mmu_type(prog) == "hash"
    radix_number = kernel.vmcoreinfo(prog).get("NUMBER(RADIX_MMU)")
    assert radix_number in (None, "0")
    assert prog["cur_cpu_spec"].mmu_features.value_() & kernel.MMU_FTR_TYPE_RADIX == 0
    assert hm is not None
    assert hash_mmu.add_hash_mmu_segments(prog) is hm
    # the runtime variables agree with the compile-time H_ values of the source
    assert hm.walker.geometry == geometry
    start = 0xC0003D0000000000 if geometry.page_shift == 12 else 0xC008000000000000
    assert hm.vmalloc[0] == start
    assert prog["__vmalloc_start"].value_() == start


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_modules_found_and_text_matches_ko(hash_name, radix_name, geometry):
    prog, hm, s = open_scenario(hash_name)
    mods = modules(prog)
    kos = ko_paths(s)
    assert set(kos) <= set(mods), "loaded modules not found through the hash segments"
    for name, path in kos.items():
        mod = mods[name]
        assert all(hm.vmalloc[0] <= base < hm.vmalloc[1] for base, _ in module_areas(mod))
        secs = module_sections(mod)
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for secname in (".text", ".rodata.str1.1", ".rodata.str1.8", ".rodata"):
                sec = elf.get_section_by_name(secname)
                if sec is None or secname not in secs or not sec.data_size:
                    continue
                want = sec.data()
                got = prog.read(secs[secname], len(want))
                skip = relocated_words(elf, secname)
                bad = [hex(i) for i in range(0, len(want) - 3, 4)
                       if i not in skip and got[i:i + 4] != want[i:i + 4]]
                assert not bad, (name, secname, bad[:8])
                assert len(skip) < len(want) // 4 or len(want) < 64
        # the module's memory (text and data) is mapped throughout
        for base, size in module_areas(mod):
            prog.read(base, size)


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_livepatch_same_as_radix_and_sysfs(hash_name, radix_name, geometry):
    prog, hm, s = open_scenario(hash_name)
    facts = livepatch_facts(prog)
    assert facts, "no klp_patch found"
    rprog, _, _ = open_scenario(radix_name)
    assert facts == livepatch_facts(rprog)
    sysfs = sys_kernel_livepatch(hash_name)
    assert sorted(f[0] for f in facts) == sorted(sysfs)
    for patch, enabled, _replace, objs in facts:
        assert enabled == sysfs[patch][0]
        by_name = {(o[0] or "vmlinux"): o for o in objs}
        assert sorted(by_name) == sorted(sysfs[patch][1])
        for oname, funcs in sysfs[patch][1].items():
            # sysfs names a func "old_name,sympos" with sympos 0 shown as 1
            assert sorted("%s,%d" % (f[0], f[1] or 1) for f in by_name[oname][3]) == funcs


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_unmapped_page_names_address(hash_name, radix_name, geometry):
    prog, hm, s = open_scenario(hash_name)
    ps = geometry.page_size
    # the guard page after each module memory area is in the vmalloc region
    # but not mapped
    for mod in modules(prog).values():
        for base, size in module_areas(mod):
            guard = base + ((size + ps - 1) & ~(ps - 1))
            try:
                hm.walker.translate(guard)
            except FaultError as e:
                assert e.address == guard
                with pytest.raises(FaultError) as e2:
                    prog.read(guard - 8, 16)
                assert e2.value.address == guard
                assert "%x" % guard in str(e2.value)
                return
    pytest.fail("no unmapped guard page found after any module area")


@pytest.mark.parametrize("hash_name,radix_name,geometry", HASH_SCENARIOS)
def test_hash_vmemmap_served(hash_name, radix_name, geometry):
    """vmemmap (mapped only in the hash page table; vmemmap_list keeps its
    blocks): the struct pages of vmalloc'd pages are in use, the page of
    swapper_pg_dir (kernel image) is reserved."""
    prog, hm, s = open_scenario(hash_name)
    assert hm.vmemmap is not None and hm.vmemmap[0] == prog["vmemmap"].value_()
    n = 0
    for va in for_each_vmap_area(prog):
        if va.vm and va.vm.pages:
            for i in range(va.vm.nr_pages.value_()):
                page = va.vm.pages[i]
                assert page._refcount.counter.value_() >= 1 and not PageReserved(page)
                n += 1
    assert n > 0
    pgd = prog["init_mm"].pgd.value_()
    assert PageReserved(prog["vmemmap"] + ((pgd - kernel.LINEAR_MAP_BASE) >> geometry.page_shift))

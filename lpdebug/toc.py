# SPDX-License-Identifier: GPL-2.0-or-later
"""
ppc64 TOC pointers (r2) of vmlinux and of every loaded module.

What comes in: a Program, or a ``struct module *`` Object. What goes out:
:class:`ModuleToc` per image and a :class:`TocMap` answering both ways
(module -> TOC, TOC value -> module).

Entry points:

- :func:`module_toc` -- one module's TOC by the kernel's own rule.
- :func:`vmlinux_toc` -- the kernel's TOC.
- :func:`module_tocs` -- a :class:`TocMap` of vmlinux and every module, each
  cross-checked against the global-entry prologue of its functions.
- :func:`prologue_toc` -- the TOC a function's ``addis r2,r12`` /
  ``addi r2,r2`` global-entry prologue computes.

A module's TOC is what ``module_64.c`` set ``.TOC.`` to when it loaded the
module: ``my_r2 = (sh_addr(.toc, else .stubs) & ~0xff) + 0x8000``. The
section headers are freed after loading, so the section address is recovered
from ``mod->sect_attrs`` (the /sys/module/M/sections/ files). Kernels up to
4.15 kept the TOC itself in ``mod->arch.toc`` and had no ``& ~0xff``; both
differences are decided by whether ``struct mod_arch_specific`` has ``toc``.
A kernel built PC-relative (``mod_arch_specific`` has ``got_section`` and no
``toc_section``) gives modules no TOC at all.

The prologue cross-check decodes a function's first two instructions, the
ones the compiler emits at every global entry point on ELFv2::

    addis r2,r12,hi      0x3c4c....     r12 holds the global entry address
    addi  r2,r2,lo       0x3842....     TOC = GEP + (hi << 16) + lo

They are the module's own statement of its TOC, independent of section
addresses: a disagreement means the module's text or its section list is
not what the loader made of it. ELFv1 has no such prologue (the TOC comes in
a function descriptor) and is not cross-checked.
"""

from __future__ import annotations

from typing import Iterator, Optional, Tuple

import drgn

from .diagnostics import from_exception, unsupported
from .kernel import elf_abi, has_member, is_ppc64
from .model import VMLINUX, ModuleToc, PrologueMismatch, TocMap
from .ppc64 import TOC_BIAS, is_toc_prologue, prologue_value

# drgn refuses addresses it cannot translate (hash-MMU module memory without
# lpdebug.hash_mmu) with NotImplementedError: as unreadable as a fault.
_UNREADABLE = (drgn.FaultError, NotImplementedError)

__all__ = (
    "VMLINUX",
    "ModuleToc",
    "TocMap",
    "module_sections",
    "module_toc",
    "module_tocs",
    "prologue_toc",
    "vmlinux_toc",
)

STAGE = "tocs"


# The vmlinux functions tried for the prologue cross-check, any that exists.
VMLINUX_PROBES = ("schedule", "msleep", "kthread", "printk", "_printk", "panic")
# Enough functions to catch a disagreement without decoding all of a large module.
MAX_PROLOGUES = 64


def prologue_toc(prog: drgn.Program, gep: int) -> Optional[int]:
    """
    The TOC that the global-entry prologue at ``gep`` computes, or None when
    the first two instructions are not ``addis r2,r12,hi; addi r2,r2,lo``.
    Raises :class:`drgn.FaultError` when the text is unreadable.
    """
    first = prog.read_u32(gep)
    second = prog.read_u32(gep + 4)
    if not is_toc_prologue(first, second):
        return None
    return prologue_value(gep, first, second)


def module_sections(mod: drgn.Object) -> Iterator[Tuple[str, int]]:
    """(name, address) of a module's sections, from ``mod->sect_attrs``."""
    attrs = mod.sect_attrs
    if not attrs:
        return
    count = attrs.nsections.value_()
    # The name is battr.attr.name since ed66f991bb19 "module: Refactor section
    # attr into bin attribute" (v5.8, in 5.7.14 and 5.10.223 kernel/module.c),
    # a char *name beside mattr before.
    with_battr = has_member(mod.prog_, "struct module_sect_attr", "battr")
    for i in range(count):
        attr = attrs.attrs[i]
        name_ptr = attr.battr.attr.name if with_battr else attr.name
        yield name_ptr.string_().decode(errors="replace"), attr.address.value_()


def _module_name(mod: drgn.Object) -> str:
    return mod.name.string_().decode(errors="replace")


def module_toc(mod: drgn.Object) -> ModuleToc:
    """
    The TOC the kernel gave a module (``struct module *``), by the rule in
    the module docstring. ``toc`` is None, with ``reason``, when the module
    has none (PC-relative kernel) or it cannot be recovered.
    """
    prog = mod.prog_
    name = _module_name(mod)
    # mod->arch.toc held the TOC itself up to 4.15; 5.10.223 and 6.12.117 keep
    # toc_section (an ELF section index, useless once the headers are freed)
    # and compute my_r2() = (sh_addr & ~0xff) + 0x8000 in module_64.c.
    if has_member(prog, "struct mod_arch_specific", "toc"):
        return ModuleToc(name, mod.arch.toc.value_(), "arch.toc")
    # 77e69ee7ce07 ("powerpc/64: modules support building with PCREL
    # addresing", 6.4) gives a PC-relative kernel's modules a GOT, no TOC.
    if (has_member(prog, "struct mod_arch_specific", "got_section")
            and not has_member(prog, "struct mod_arch_specific", "toc_section")):
        return ModuleToc(name, None, None,
                         reason="the kernel is built PC-relative: modules have no TOC")
    if not has_member(prog, "struct module", "sect_attrs"):
        return ModuleToc(name, None, None,
                         reason="the kernel has no module section attributes "
                                "(needs KALLSYMS and SYSFS)")
    sections = dict(module_sections(mod))
    for section in (".toc", ".stubs"):
        if section in sections:
            address = sections[section]
            return ModuleToc(name, (address & ~0xFF) + TOC_BIAS, section,
                             section_address=address)
    return ModuleToc(name, None, None,
                     reason="the module lists neither a .toc nor a .stubs section")


def vmlinux_toc(prog: drgn.Program) -> ModuleToc:
    """
    The kernel's TOC: ``paca_ptrs[0]->kernel_toc`` (``paca[0]`` before
    d2e60075a3d4, "powerpc/64: Use array of paca pointers and allocate
    pacas individually", 4.17), which boot code loads from r2; else the
    ``.TOC.`` symbol; else ``__toc_start + 0x8000`` (kernels up to 5.15).
    """
    errors = []
    for getter in (lambda: prog["paca_ptrs"][0].kernel_toc, lambda: prog["paca"][0].kernel_toc):
        try:
            return ModuleToc(VMLINUX, getter().value_(), "paca")
        except (LookupError, *_UNREADABLE, TypeError) as e:
            errors.append(str(e))
    for symbol, bias, source in ((".TOC.", 0, ".TOC."), ("__toc_start", TOC_BIAS, "__toc_start")):
        try:
            return ModuleToc(VMLINUX, prog.symbol(symbol).address + bias, source)
        except LookupError:
            continue
    return ModuleToc(VMLINUX, None, None,
                     reason="no paca_ptrs, .TOC. or __toc_start: " + "; ".join(errors))


def _module_functions(mod: drgn.Object) -> Iterator[Tuple[str, int]]:
    """(name, address) of the module's function symbols, from its own kallsyms
    (drgn's :func:`~drgn.helpers.linux.kallsyms.module_kallsyms`)."""
    from .drgn_compat import module_kallsyms

    # mod->kallsyms since 8244062ef1e5 ("modules: fix longstanding /proc/kallsyms
    # vs module insertion race.", 4.5), as module_kallsyms() knows too.
    kallsyms = mod.kallsyms if has_member(mod.prog_, "struct module", "kallsyms") else mod
    if not kallsyms.symtab.value_() or not kallsyms.num_symtab.value_():
        return  # module_kallsyms would index symbol -1
    for sym in module_kallsyms(mod):
        if sym.kind == drgn.SymbolKind.FUNC and sym.address:
            yield sym.name, sym.address


def _cross_check(prog: drgn.Program, entry: ModuleToc,
                 functions: Iterator[Tuple[str, int]]) -> None:
    for fname, gep in functions:
        if entry.prologues_checked >= MAX_PROLOGUES:
            break
        try:
            value = prologue_toc(prog, gep)
        except _UNREADABLE:
            continue
        if value is None:
            continue
        entry.prologues_checked += 1
        if entry.prologue_toc is None:
            entry.prologue_toc, entry.prologue_function, entry.prologue_address = value, fname, gep
        if entry.toc is not None and value != entry.toc:
            entry.prologue_mismatches.append(PrologueMismatch(fname, gep, value))
    if not entry.prologues_checked and entry.prologue_note is None:
        entry.prologue_note = "no function with an addis r2,r12 / addi r2,r2 prologue was readable"


def _vmlinux_functions(prog: drgn.Program) -> Iterator[Tuple[str, int]]:
    for name in VMLINUX_PROBES:
        try:
            yield name, prog.symbol(name).address
        except LookupError:
            continue


def module_tocs(prog: drgn.Program, *, cross_check: bool = True) -> TocMap:
    """
    vmlinux's and every loaded module's TOC, each cross-checked (on ELFv2)
    against its functions' global-entry prologues. Problems go to
    ``diagnostics`` and the modules' ``reason``/``prologue_note``; never raises
    for bad memory.
    """
    from drgn.helpers.linux.module import for_each_module

    result = TocMap()
    if not is_ppc64(prog):
        result.diagnostics.append(unsupported(STAGE, "the target is not ppc64: it has no TOCs"))
        return result
    check = cross_check and elf_abi(prog) == 2
    entry = vmlinux_toc(prog)
    result.tocs[VMLINUX] = entry
    if check:
        _cross_check(prog, entry, _vmlinux_functions(prog))
    try:
        modules = list(for_each_module(prog))
    except (LookupError, *_UNREADABLE) as e:
        result.diagnostics.append(from_exception(STAGE, "module list", e))
        modules = []
    for mod in modules:
        try:
            entry = module_toc(mod)
        except (LookupError, *_UNREADABLE) as e:
            result.diagnostics.append(from_exception(STAGE, f"TOC of module at {mod.value_():#x}", e,
                                                     mod.value_()))
            continue
        result.tocs[entry.module] = entry
        if not check:
            entry.prologue_note = "ELFv1: functions have no global-entry prologue"
            continue
        try:
            _cross_check(prog, entry, _module_functions(mod))
        except (LookupError, *_UNREADABLE) as e:
            entry.prologue_note = f"module symbols unreadable: {e}"
    return result

# SPDX-License-Identifier: GPL-2.0-or-later
"""
Address -> symbol and module, in bulk.

Naming each address with ``prog.symbol()`` and ``address_to_module()`` costs
a fraction of a millisecond per address; a report names tens of thousands of
ftrace records and stack frames. :class:`Symbolizer` reads every symbol once
(vmlinux and the modules whose debug info is loaded), sorts them, and answers
with ``bisect``.

Naming rule (the kernel's kallsyms rule, so that names agree with tracefs and
``/proc/PID/stack``): an address is named after the nearest symbol at or below
it, as long as both lie in the same image (vmlinux, or one module's memory)
and no other symbol starts in between. Several symbols at one address
(aliases) are resolved the way ``scripts/kallsyms.c`` sorts them: non-weak
before weak, names a linker script may provide (``__start_*``, ``__foo_end``
...) last, fewer leading underscores first, then by name. For example a
``__weak`` function and its ``.localalias`` resolve to the ``.localalias``,
as kallsyms does. Inside a module the kernel keeps the first symbol of the
module's symbol table, where local symbols come first: ``lpd_init`` wins over
its ``init_module`` alias. (Ties beyond these rules follow drgn's symbol
order, which is the symbol table's.)

Module memory is known from the kernel's module list, so an address inside a
module without a covering symbol (freed ``__init`` text, stubs) still gets
its module.

One exception to the kallsyms rule: an address *past the end* of a symbol
that has an ELF size (more than ``size`` bytes after its start; a return
address right at the end still belongs to it) is not named after it. Such
code is a weak function the linker overrode, whose symbol is gone: the
kernel itself marks the dyn_ftrace records there DISABLED because kallsyms
names them at an impossible offset (``test_for_valid_rec()`` in
kernel/trace/ftrace.c). :meth:`Symbolizer.lookup` gives None there, and
:meth:`Symbolizer.describe` says ``sym+0xoff (past end)``.
"""

from __future__ import annotations

import bisect
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import drgn

from . import kernel

__all__ = ("SymbolInfo", "Symbolizer")

_FACT_KEY = ("lpdebug.symbols", "Symbolizer")

_IGNORED_KINDS = (drgn.SymbolKind.SECTION, drgn.SymbolKind.FILE)


class SymbolInfo(NamedTuple):
    # A tuple, not a dataclass: a triage makes tens of thousands of them.
    name: str
    address: int  # start of the symbol
    size: int  # ELF size, or the distance to the next symbol when that is 0
    offset: int  # of the looked-up address from the start
    module: Optional[str]  # None for vmlinux


def _may_be_linker_script_provided(name: str) -> bool:
    # Same test as may_be_linker_script_provide_symbol() in scripts/kallsyms.c.
    if len(name) < 8 or not name.startswith("__"):
        return False
    return (
        name.startswith(("__start_", "__stop_", "__end_"))
        or name.endswith(("_start", "_end"))
    )


def _alias_rank(sym: drgn.Symbol) -> Tuple[int, int, int, str]:
    name = sym.name
    return (
        1 if sym.binding == drgn.SymbolBinding.WEAK else 0,
        1 if _may_be_linker_script_provided(name) else 0,
        len(name) - len(name.lstrip("_")),
        name,
    )


def _module_regions(prog: drgn.Program, errors: List[str]) -> List[Tuple[int, int, str]]:
    """(start, end, module name) of every loaded module's memory, sorted."""
    from drgn.helpers.linux.module import for_each_module, module_address_regions

    regions: List[Tuple[int, int, str]] = []
    try:
        prog["modules"]
    except LookupError:
        return _drgn_module_regions(prog)  # CONFIG_MODULES=n, or no debug info
    try:
        for mod in for_each_module(prog):
            try:
                name = mod.name.string_().decode(errors="replace")
                for start, size in module_address_regions(mod):
                    if size:
                        regions.append((start, start + size, name))
            except (drgn.FaultError, LookupError, AttributeError) as e:
                errors.append(f"module at {mod.value_():#x} unreadable: {e}")
    except (drgn.FaultError, LookupError, AttributeError, ValueError) as e:
        errors.append(f"module list unreadable: {e}")
    if not regions:
        regions = _drgn_module_regions(prog)
    regions.sort()
    return regions


def _drgn_module_regions(prog: drgn.Program) -> List[Tuple[int, int, str]]:
    # drgn's own view, for targets whose module list cannot be walked.
    regions = []
    try:
        for module in prog.modules():
            if isinstance(module, drgn.RelocatableModule):
                for start, end in module.address_ranges or ():
                    regions.append((start, end, module.name))
    except (ValueError, drgn.FaultError):
        pass
    return regions


def _vmlinux_range(prog: drgn.Program) -> Tuple[int, int]:
    start = end = None
    for begin_name, end_name in (("_text", "_end"), ("_stext", "_end")):
        try:
            start = prog.symbol(begin_name).address
            end = prog.symbol(end_name).address
            break
        except LookupError:
            continue
    if start is None or end is None or end <= start:
        try:
            start, end = prog.main_module().address_range or (0, 0)
        except LookupError:
            start, end = 0, 0
    return start, end


class Symbolizer:
    """
    Bulk symbolization for one :class:`drgn.Program`.

    ``Symbolizer(prog)`` is built once per program and then reused, a fact
    of the program until :func:`lpdebug.kernel.invalidate` (call it after
    loading more debug info, or when modules may have come and gone).
    """

    def __new__(cls, prog: drgn.Program) -> "Symbolizer":
        def build() -> "Symbolizer":
            self = super(Symbolizer, cls).__new__(cls)
            self._build(prog)
            return self

        return kernel.cached_fact(prog, _FACT_KEY, build)

    def _build(self, prog: drgn.Program) -> None:
        self.prog = prog
        self.errors: List[str] = []
        try:
            raw = prog.symbols()
        except (LookupError, ValueError) as e:
            self.errors.append(f"no symbol table: {e}")
            raw = []
        self._regions = _module_regions(prog, self.errors)
        self._region_starts = [r[0] for r in self._regions]
        self._vmlinux = _vmlinux_range(prog)

        # Aliases are rare: rank candidates only where an address repeats.
        best: Dict[int, drgn.Symbol] = {}
        aliases: Dict[int, List[drgn.Symbol]] = {}
        for sym in raw:
            name = sym.name
            if not name or name[0] == "$":
                continue
            addr = sym.address
            if not addr:
                continue
            other = best.get(addr)
            if other is None:
                best[addr] = sym
            else:
                aliases.setdefault(addr, [other]).append(sym)
        for addr, candidates in aliases.items():
            candidates = [c for c in candidates if c.kind not in _IGNORED_KINDS] or candidates
            region = self._region_of(addr)
            if region is not None and region[2] is not None:
                # Module kallsyms (find_kallsyms_symbol) keeps the first symbol
                # of the module's symtab, where local symbols come first.
                best[addr] = min(
                    enumerate(candidates),
                    key=lambda ic: (ic[1].binding != drgn.SymbolBinding.LOCAL, ic[0]),
                )[1]
            else:
                best[addr] = min(candidates, key=_alias_rank)
        self._addrs: List[int] = sorted(best)
        self._syms: List[drgn.Symbol] = [best[a] for a in self._addrs]

    # -- regions --------------------------------------------------------------

    def _region_of(self, addr: int) -> Optional[Tuple[int, int, Optional[str]]]:
        i = bisect.bisect_right(self._region_starts, addr) - 1
        if i >= 0:
            start, end, name = self._regions[i]
            if addr < end:
                return start, end, name
        start, end = self._vmlinux
        if start <= addr < end:
            return start, end, None
        return None

    def module_of(self, addr: int) -> Optional[str]:
        """Name of the module whose memory holds ``addr``; None for vmlinux or unknown."""
        region = self._region_of(addr)
        return region[2] if region else None

    def in_vmlinux(self, addr: int) -> bool:
        start, end = self._vmlinux
        return start <= addr < end

    # -- symbols --------------------------------------------------------------

    def lookup(self, addr: int) -> Optional[SymbolInfo]:
        """
        The symbol naming ``addr`` (kallsyms rule, see the module docstring);
        None when no symbol does, or ``addr`` lies past the end of the
        nearest one.
        """
        info = self.nearest(addr)
        if info is None or info.offset > info.size:
            return None
        return info

    def nearest(self, addr: int) -> Optional[SymbolInfo]:
        """
        The nearest symbol at or below ``addr`` in the same image, even when
        ``addr`` lies past its end (then ``offset > size``, ``size`` being
        the symbol's ELF size).
        """
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        sym = self._syms[i]
        start = self._addrs[i]
        size = sym.size
        if not (size and addr <= start + size):
            region = self._region_of(addr)
            if region is None or not region[0] <= start < region[1]:
                return None
            if not size:
                next_start = self._addrs[i + 1] if i + 1 < len(self._addrs) else region[1]
                size = min(next_start, region[1]) - start
        region = self._region_of(start)
        return SymbolInfo(
            name=sym.name,
            address=start,
            size=size,
            offset=addr - start,
            module=region[2] if region else None,
        )

    def nearest_each(self, addrs: Sequence[int]) -> List[Optional[SymbolInfo]]:
        """
        :meth:`nearest` of every address of ``addrs``, in their order, in one
        merge pass over the addresses and the symbol table when the addresses
        ascend (dyn_ftrace records do, page by page): each search starts at
        the symbol the previous one found.
        """
        table = self._addrs
        syms = self._syms
        count = len(table)
        vmlinux_start, vmlinux_end = self._vmlinux
        region_of = self._region_of
        bisect_right = bisect.bisect_right
        result: List[Optional[SymbolInfo]] = []
        append = result.append
        lo = 0
        previous = -1
        for addr in addrs:
            if addr < previous:
                lo = 0
            previous = addr
            i = bisect_right(table, addr, lo) - 1
            if i < 0:
                append(None)
                continue
            lo = i
            start = table[i]
            sym = syms[i]
            size = sym.size
            # Images do not overlap: addr shares the symbol's image exactly
            # when it lies within that image's bounds.
            if vmlinux_start <= start < vmlinux_end:
                image_start, image_end, module = vmlinux_start, vmlinux_end, None
            else:
                region = region_of(start)
                if region is None:
                    image_start = image_end = 0
                    module = None
                else:
                    image_start, image_end, module = region
            if size and addr <= start + size:
                append(SymbolInfo(sym.name, start, size, addr - start, module))
            elif image_start <= addr < image_end:
                if not size:
                    size = min(table[i + 1] if i + 1 < count else image_end, image_end) - start
                append(SymbolInfo(sym.name, start, size, addr - start, module))
            else:
                append(None)
        return result

    def name_of(self, addr: int) -> Optional[str]:
        """The symbol name for ``addr``, without offset; None when unknown."""
        info = self.lookup(addr)
        return info.name if info else None

    def describe(self, addr: int) -> str:
        """``name+0xoff [module]`` like the kernel's %pS, or the bare hex address."""
        info = self.nearest(addr)
        if info is None:
            mod = self.module_of(addr)
            return f"{addr:#x}" + (f" [{mod}]" if mod else "")
        text = info.name + (f"+{info.offset:#x}" if info.offset else "")
        if info.offset > info.size:
            text += " (past end)"
        return text + (f" [{info.module}]" if info.module else "")

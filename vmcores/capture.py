"""Capture a stopped ppc64le pseries QEMU guest into a vmcore like the kernel's /proc/vmcore.

The vmcore is a little-endian ELF64 ET_CORE, EM_PPC64 file with
  - one PT_NOTE: one NT_PRSTATUS ("CORE", type 1) per CPU, then the VMCOREINFO note ("VMCOREINFO", type 0),
  - one PT_LOAD for all of RAM: p_paddr = physical address 0, p_vaddr = 0xc000000000000000 (linear map).
Registers come from QMP `human-monitor-command` "info registers" (one call per cpu-index), memory from QMP
`pmemsave`, the VMCOREINFO note from guest physical memory at the address in /sys/kernel/vmcoreinfo.
"""
import json
import os
import re
import socket
import struct
import time

PAGE_OFFSET = 0xc000000000000000
EM_PPC64 = 21
NT_PRSTATUS = 1
PRSTATUS_SIZE = 504           # ppc64 struct elf_prstatus
PR_REG_OFFSET = 112           # offset of pr_reg (48 u64) in elf_prstatus


class QMP:
    def __init__(self, path, timeout=60):
        deadline = time.time() + timeout
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.s.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        self.s.settimeout(600)
        self.f = self.s.makefile("rwb", buffering=0)
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError("QMP connection closed")
            msg = json.loads(line)
            if "event" in msg:
                continue
            return msg

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.f.write(json.dumps(req).encode() + b"\n")
        r = self._read()
        if "error" in r:
            raise RuntimeError("QMP %s failed: %s" % (name, r["error"]))
        return r.get("return")

    def hmp(self, line, cpu=None):
        args = {"command-line": line}
        if cpu is not None:
            args["cpu-index"] = cpu
        return self.cmd("human-monitor-command", **args)

    def close(self):
        # QEMU serves one QMP client at a time: the file made by makefile()
        # holds the connection open until it is closed too.
        for handle in (getattr(self, "f", None), self.s):
            try:
                if handle is not None:
                    handle.close()
            except OSError:
                pass


def parse_info_registers(text):
    """Parse QEMU's ppc "info registers" into a dict of register values."""
    regs = {}
    for name, val in re.findall(r"\b(NIP|LR|CTR|XER|MSR|CR|DAR|DSISR)\s+([0-9a-fA-F]+)", text):
        regs.setdefault(name, int(val, 16))
    gprs = []
    for m in re.finditer(r"^GPR(\d\d)((?:\s+[0-9a-fA-F]{16})+)", text, re.M):
        base = int(m.group(1))
        for i, v in enumerate(m.group(2).split()):
            while len(gprs) < base + i:
                gprs.append(0)
            if len(gprs) == base + i:
                gprs.append(int(v, 16))
    if len(gprs) < 32 or "NIP" not in regs:
        raise ValueError("cannot parse registers:\n" + text)
    regs["GPR"] = gprs[:32]
    return regs


def prstatus(regs, pid=0):
    """ppc64 struct elf_prstatus with pr_reg = struct pt_regs (48 u64)."""
    buf = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<i", buf, 32, pid)  # pr_pid
    r = list(regs["GPR"]) + [regs["NIP"], regs.get("MSR", 0), 0, regs.get("CTR", 0), regs.get("LR", 0),
                             regs.get("XER", 0), regs.get("CR", 0), 0, 0, regs.get("DAR", 0),
                             regs.get("DSISR", 0), 0]
    r += [0] * (48 - len(r))  # elf_gregset_t is 48 words, pt_regs 44
    # pr_reg: gpr0-31, nip, msr, orig_gpr3, ctr, link, xer, ccr, softe, trap, dar, dsisr, result
    struct.pack_into("<48Q", buf, PR_REG_OFFSET, *r)
    struct.pack_into("<i", buf, PR_REG_OFFSET + 48 * 8, 1)  # pr_fpvalid
    return bytes(buf)


def note(name, ntype, desc):
    n = name.encode() + b"\0"
    hdr = struct.pack("<III", len(n), len(desc), ntype)
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return hdr + pad(n) + pad(desc)


def parse_notes(data):
    """Yield (name, type, desc) of ELF notes in data."""
    off = 0
    while off + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, off)
        if namesz == 0 and descsz == 0:
            break
        off += 12
        name = data[off:off + namesz].rstrip(b"\0").decode(errors="replace")
        off += (namesz + 3) & ~3
        desc = data[off:off + descsz]
        off += (descsz + 3) & ~3
        yield name, ntype, desc


def vmcoreinfo_from_memory(ram_path, paddr):
    """The VMCOREINFO text of the note at physical address paddr of a raw RAM image."""
    with open(ram_path, "rb") as f:
        f.seek(paddr)
        page = f.read(65536)
    for name, ntype, desc in parse_notes(page):
        if name == "VMCOREINFO":
            return desc.rstrip(b"\0").decode()
        break
    raise ValueError("no VMCOREINFO note at physical address %#x" % paddr)


def _copy_sparse(src, dst, length, chunk=1 << 16):
    zero = bytes(chunk)
    done = 0
    while done < length:
        n = min(chunk, length - done)
        b = src.read(n)
        if len(b) != n:
            raise IOError("short read")
        if b == zero[:n]:
            dst.seek(n, os.SEEK_CUR)
        else:
            dst.write(b)
        done += n


def write_vmcore(path, ram_path, ram_size, cpu_regs, vmcoreinfo_text, pids=None):
    """Write an ELF vmcore from a raw RAM image (physical address 0..ram_size)."""
    notes = b""
    for i, regs in enumerate(cpu_regs):
        notes += note("CORE", NT_PRSTATUS, prstatus(regs, (pids or {}).get(i, 0)))
    notes += note("VMCOREINFO", 0, vmcoreinfo_text.encode())
    ehsize, phentsize, phnum = 64, 56, 2
    note_off = ehsize + phentsize * phnum
    data_off = (note_off + len(notes) + 0xffff) & ~0xffff
    eh = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + b"\0" * 9, 4, EM_PPC64, 1, 0, ehsize, 0,
                     0, ehsize, phentsize, phnum, 0, 0, 0)
    ph_note = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(notes), 0, 0)
    ph_load = struct.pack("<IIQQQQQQ", 1, 7, data_off, PAGE_OFFSET, 0, ram_size, ram_size, 0)
    tmp = path + ".tmp"
    with open(tmp, "wb") as out, open(ram_path, "rb") as src:
        out.write(eh + ph_note + ph_load + notes)
        out.seek(data_off)
        _copy_sparse(src, out, ram_size)
        out.truncate(data_off + ram_size)
    os.replace(tmp, path)


def elf_extent(path):
    """Size an ELF core really needs (end of its last segment), for a core read from a raw disk."""
    with open(path, "rb") as f:
        eh = f.read(64)
        if eh[:4] != b"\x7fELF":
            raise ValueError("no ELF header in " + path)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        f.seek(phoff)
        end = phoff + phentsize * phnum
        for _ in range(phnum):
            p = f.read(phentsize)
            off, filesz = struct.unpack_from("<Q", p, 8)[0], struct.unpack_from("<Q", p, 32)[0]
            end = max(end, off + filesz)
    return end


def copy_elf_core(disk, path):
    """Copy the ELF core at the start of a raw disk image to path (sparse)."""
    n = elf_extent(disk)
    tmp = path + ".tmp"
    with open(disk, "rb") as src, open(tmp, "wb") as out:
        _copy_sparse(src, out, n)
        out.truncate(n)
    os.replace(tmp, path)
    return n


def vmcoreinfo_from_core(path):
    with open(path, "rb") as f:
        eh = f.read(64)
        phoff, = struct.unpack_from("<Q", eh, 32)
        phentsize, phnum = struct.unpack_from("<HH", eh, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p = f.read(phentsize)
            ptype, = struct.unpack_from("<I", p, 0)
            if ptype != 4:
                continue
            off, filesz = struct.unpack_from("<Q", p, 8)[0], struct.unpack_from("<Q", p, 32)[0]
            f.seek(off)
            for name, ntype, desc in parse_notes(f.read(filesz)):
                if name == "VMCOREINFO":
                    return desc.rstrip(b"\0").decode()
    raise ValueError("no VMCOREINFO note in " + path)


def capture_stopped_guest(qmp, workdir, vmcore, ram_size, vmcoreinfo_paddr):
    """Guest must be stopped. Writes vmcore; returns (vmcoreinfo_text, cpu_regs)."""
    cpus = qmp.cmd("query-cpus-fast")
    cpu_regs = []
    for c in sorted(cpus, key=lambda c: c["cpu-index"]):
        txt = qmp.hmp("info registers", cpu=c["cpu-index"])
        cpu_regs.append(parse_info_registers(txt))
    ram = os.path.join(workdir, "ram.raw")
    if os.path.exists(ram):
        os.unlink(ram)
    qmp.cmd("pmemsave", val=0, size=ram_size, filename=ram)
    while not os.path.exists(ram) or os.path.getsize(ram) < ram_size:
        time.sleep(0.1)
    text = vmcoreinfo_from_memory(ram, vmcoreinfo_paddr)
    write_vmcore(vmcore, ram, ram_size, cpu_regs, text)
    os.unlink(ram)
    return text, cpu_regs

#!/usr/bin/env python3
"""Make TorchSharp 0.107.0's libLibTorchSharp.so load on a libstdc++ older than GLIBCXX_3.4.32 (Debian 12: 3.4.30).

The library was linked with GCC 13 and asks for exactly one symbol at GLIBCXX_3.4.32, _ZSt21ios_base_library_initv,
which it never calls. Two edits, in place, on the copy in the build output (never on the NuGet cache):
  1. that symbol's version index in .gnu.version becomes 1 (global, unversioned) -- what
     `patchelf --clear-symbol-version _ZSt21ios_base_library_initv` does;
  2. the GLIBCXX_3.4.32 entry of .gnu.version_r, now used by no symbol, is marked VER_FLG_WEAK, so ld.so no longer
     refuses the library for a missing version (patchelf 0.14 leaves the entry, and ld.so checks every entry).
Usage: relax_glibcxx.py PATH/libLibTorchSharp.so   (idempotent; prints what it did)
"""
import struct, sys

SYMBOL, VERSION = b"_ZSt21ios_base_library_initv", b"GLIBCXX_3.4.32"
SHT_DYNSYM, SHT_VERNEED, SHT_VERSYM = 11, 0x6FFFFFFE, 0x6FFFFFFF
VER_FLG_WEAK = 0x2


def main(path):
    data = bytearray(open(path, "rb").read())
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        sys.exit(f"{path}: not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]

    def cstr(sec_index, off):
        base = secs[sec_index][4] + off
        return bytes(data[base:data.index(0, base)])

    dynsym = next(s for s in secs if s[1] == SHT_DYNSYM)
    versym = next(s for s in secs if s[1] == SHT_VERSYM)
    verneed = next(s for s in secs if s[1] == SHT_VERNEED)
    nsyms = dynsym[5] // 24
    sym_index = next((i for i in range(nsyms)
                      if cstr(dynsym[6], struct.unpack_from("<I", data, dynsym[4] + 24 * i)[0]) == SYMBOL), None)
    # Find the GLIBCXX_3.4.32 requirement (its version index is vna_other).
    aux_off, ver_index, off = None, None, verneed[4]
    while True:
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", data, off)
        a = off + vn_aux
        for _ in range(vn_cnt):
            vna_hash, vna_flags, vna_other, vna_name, vna_next = struct.unpack_from("<IHHII", data, a)
            if cstr(verneed[6], vna_name) == VERSION:
                aux_off, ver_index = a, vna_other
            a += vna_next
        if vn_next == 0:
            break
        off += vn_next
    if aux_off is None:
        print(f"{path}: no {VERSION.decode()} requirement, nothing to do")
        return
    if sym_index is not None:
        vs = versym[4] + 2 * sym_index
        if struct.unpack_from("<H", data, vs)[0] & 0x7FFF == ver_index:
            struct.pack_into("<H", data, vs, 1)
            print(f"{path}: {SYMBOL.decode()} unversioned")
    users = [i for i in range(nsyms) if struct.unpack_from("<H", data, versym[4] + 2 * i)[0] & 0x7FFF == ver_index]
    if users:
        sys.exit(f"{path}: {len(users)} other symbol(s) still need {VERSION.decode()}; not patched")
    flags, = struct.unpack_from("<H", data, aux_off + 4)
    if not flags & VER_FLG_WEAK:
        struct.pack_into("<H", data, aux_off + 4, flags | VER_FLG_WEAK)
        print(f"{path}: {VERSION.decode()} requirement marked weak")
    open(path, "wb").write(data)


if __name__ == "__main__":
    main(sys.argv[1])
